"""One attempt's step journal: replays what earlier attempts of the turn recorded,
records what runs now (see molecule_runtime/adapters/steps.py for the contract)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from molecule_runtime.adapters.steps import StepMismatch, StepResultError, current_journal
from molecule_runtime.observability import metrics
from molecule_runtime.store.steps import StepStore
from molecule_runtime.store.steps_table import RecordedStep

log = logging.getLogger(__name__)

# Writes noting replays, kept referenced until done (the loop holds tasks weakly).
_noting: set[asyncio.Task[None]] = set()


class AttemptSteps:
    """The steps of one attempt of one task turn, in the order the adapter asks for them."""

    def __init__(
        self,
        store: StepStore,
        task_id: str,
        turn: str,
        recorded: list[RecordedStep],
        attempt: int | None = None,
    ) -> None:
        self.store = store
        self.task_id = task_id
        self.turn = turn
        self.attempt = attempt  # recorded with each step; None: not known
        self.max_bytes = store.max_bytes
        self._recorded = {s.seq: s for s in recorded}
        self._next = 0
        self.replayed = 0
        self.ran = 0
        self._unnoted: list[int] = []  # replays not yet written to the journal

    @classmethod
    async def load(
        cls, store: StepStore, task_id: str, turn: str, attempt: int | None = None
    ) -> AttemptSteps:
        return cls(store, task_id, turn, await store.load(task_id, turn), attempt)

    async def run(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        # The place is taken when the step is asked for, so steps run side by
        # side (asyncio.gather) are numbered in the order they were asked.
        seq = self._next
        self._next += 1
        earlier = self._recorded.get(seq)
        if earlier is not None:
            self._check(seq, name, earlier)
            self.replayed += 1
            metrics.STEPS.labels("replayed").inc()
            log.info("task %s: step %d %r replayed from the journal", self.task_id, seq, name)
            self._note_replay(seq)
            return json.loads(earlier.result)
        value = await call()
        text = self._encode(name, value)
        stored = await self.store.record(
            self.task_id, self.turn, RecordedStep(seq, name, text, self.attempt)
        )
        # Another attempt of the turn recorded this place first: its result stands.
        self._check(seq, name, stored)
        self.ran += 1
        metrics.STEPS.labels("recorded").inc()
        return json.loads(stored.result)

    def _note_replay(self, seq: int) -> None:
        """Write down, off the adapter's path, that this attempt replayed `seq`:
        replays in a row share one write (the console's timeline reads them)."""
        if self.attempt is None:
            return
        self._unnoted.append(seq)
        if len(self._unnoted) == 1:
            task = asyncio.get_running_loop().create_task(self._write_replays())
            _noting.add(task)
            task.add_done_callback(_noting.discard)

    async def _write_replays(self) -> None:
        assert self.attempt is not None
        await asyncio.sleep(0)  # the replays asked for right after this one join it
        seqs, self._unnoted = self._unnoted, []
        try:
            await self.store.replayed(self.task_id, self.turn, seqs, self.attempt)
        except Exception:
            # Only the timeline misses it: the attempt itself goes on.
            log.warning("task %s: could not note the replay of steps %s", self.task_id, seqs, exc_info=True)

    def _check(self, seq: int, name: str, recorded: RecordedStep) -> None:
        if recorded.name != name:
            raise StepMismatch(
                f"step {seq} of this task turn was recorded as {recorded.name!r}, but this attempt "
                f"asks for {name!r}: an attempt must ask for its steps in the same order as the "
                "earlier ones (a step's name and place identify it)"
            )

    def _encode(self, name: str, value: Any) -> str:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StepResultError(
                f"step {name!r} returned {type(value).__name__}, which is not a JSON value "
                f"({exc}); return something json.dumps takes (dict, list, str, number, bool, None)"
            ) from None
        size = len(text.encode())
        if size > self.max_bytes:
            raise StepResultError(
                f"step {name!r} returned {size} bytes of JSON, more than MOLECULE_STEP_MAX_BYTES "
                f"({self.max_bytes}); store large results elsewhere and return a reference"
            )
        return text


@contextlib.contextmanager
def journaling(steps: AttemptSteps | None) -> Iterator[None]:
    """`step()` inside the block uses `steps` (nothing changes when None)."""
    if steps is None:
        yield
        return
    token = current_journal.set(steps)
    try:
        yield
    finally:
        current_journal.reset(token)
