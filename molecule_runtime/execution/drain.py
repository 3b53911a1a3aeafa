"""Direct runs at shutdown: a direct task cannot be handed over, so one still
running when the drain is that far along is ended FAILED (SHUT_DOWN) while its
stream is open, and its final state reaches the client and the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from a2a.types.a2a_pb2 import TaskState

from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.execution.direct import run_direct
from molecule_runtime.execution.events import TaskEvents
from molecule_runtime.execution.headless import headless_events
from molecule_runtime.store import ObservedTaskStore

log = logging.getLogger(__name__)

SHUT_DOWN = (
    "The server shut down before this task finished (direct mode cannot resume it). "
    "Send it again (durable mode, TEMPORAL_HOST, hands such tasks over instead)."
)


def stop_direct_after(streams_close_after: float) -> float:
    """Seconds after SIGTERM when direct tasks still running are ended (FAILED,
    SHUT_DOWN): before the open streams are closed (`streams_close_after`), so
    that every stream still carries the task's final state."""
    return max(0.0, streams_close_after - min(1.0, streams_close_after / 2))


class DirectRuns:
    """The direct runs of this process, ended `stop_after` seconds into a drain
    (None: never; they end with the process)."""

    def __init__(
        self, store: ObservedTaskStore, draining: asyncio.Event, stop_after: float | None
    ) -> None:
        self.store = store
        self.draining = draining
        self.stop_after = stop_after
        self._running: set[asyncio.Task[object]] = set()
        self._stopped: set[asyncio.Task[object]] = set()
        self._watch: asyncio.Task[None] | None = None
        # The running direct tasks were ended: a waiting one does not start here.
        self.ended = False

    async def run(
        self,
        adapter: BaseAdapter,
        task: TaskInput,
        events: TaskEvents,
        attributes: dict[str, str],
        *,
        announce: bool,
        batch_window: float,
    ) -> None:
        """`run_direct` in the current asyncio task, ended as above at shutdown."""
        run = self._track()
        try:
            await run_direct(
                adapter,
                task,
                events,
                attributes,
                announce=announce,
                batch_window=batch_window,
                shutting_down=self.draining.is_set,
            )
        except asyncio.CancelledError:
            if run is not None and run in self._stopped:
                # Ended by the drain while its stream is still open: the final
                # state goes through the stream (and the store) like any other.
                run.uncancel()
                try:
                    await events.status(TaskState.TASK_STATE_FAILED, SHUT_DOWN)
                    return
                except Exception:
                    log.debug("task %s: the stream closed before its final state", task.task_id)
            if self.draining.is_set():
                # The stream is being torn down: the final state goes straight
                # to the store, so no replica leaves the task working for ever.
                fail = headless_events(self.store, task.task_id, task.context_id)
                with contextlib.suppress(Exception):
                    await asyncio.shield(fail.status(TaskState.TASK_STATE_FAILED, SHUT_DOWN))
            raise
        finally:
            if run is not None:
                self._running.discard(run)
                self._stopped.discard(run)

    def _track(self) -> asyncio.Task[object] | None:
        """Note the running direct task, to be ended before the streams close at shutdown."""
        run = asyncio.current_task()
        if run is None or self.stop_after is None:
            return None
        self._running.add(run)
        if self.ended:
            # Started after the running ones were ended (a request still on an
            # open connection): ended at its first await, the same way.
            self._stopped.add(run)
            run.cancel("the server is shutting down")
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._end_when_draining())
        return run

    async def _end_when_draining(self) -> None:
        assert self.stop_after is not None
        await self.draining.wait()
        await asyncio.sleep(self.stop_after)
        self.ended = True
        for run in list(self._running):
            self._stopped.add(run)
            run.cancel("the server is shutting down")
