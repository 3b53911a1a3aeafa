"""Whether the task store can take writes now, and writes retried until it can.

A database that restarts, recovers from a crash, fills its disk or is locked
costs time, never a task: writes that fail for such a reason wait and are
retried, with back-off and without limit, for as long as the process lives
(store/group_commit.py, store/message_ids.py). Meanwhile new work is refused
with a retryable error (`StoreUnavailable`: REST 503 + `Retry-After`), since
it could not be stored before it is acknowledged. Which failures pass, and how
they are named, is store/failures.py.

One WARNING says when the store went away, one INFO when it is back (how long,
how many writes waited); the failures in between are logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from molecule_runtime.refusals import RetryLater
from molecule_runtime.store.failures import StoreUnavailable, is_transient, reason_of

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Back-off between two tries of a write the store refused for now.
RETRY_MIN, RETRY_MAX = 0.05, 2.0


class StoreHealth:
    """The store's state as its writers see it; one per process and store."""

    def __init__(self, probe: Callable[[], Awaitable[None]] | None = None) -> None:
        self._probe = probe
        self._down_since: float | None = None
        self._reason = ""
        self._waited = 0
        self._last_failure = 0.0
        self._prober: asyncio.Task[None] | None = None
        self.outages = 0

    @property
    def available(self) -> bool:
        return self._down_since is None

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def down_for(self) -> float:
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(self._reason or "unreachable")

    def note_waiting(self, waiting: int) -> None:
        """While the store is away, `waiting` writes are pending (for the INFO when it is back)."""
        if self._down_since is not None:
            self._waited = max(self._waited, waiting)

    def failed(self, error: BaseException, waiting: int = 0) -> None:
        """A store operation failed for now (`is_transient`); `waiting` writes wait on it."""
        self._waited = max(self._waited, waiting)
        if waiting:
            # Writes wait and retry by themselves: the probe must not say "back" for them.
            self._last_failure = time.monotonic()
        reason = reason_of(error)
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._reason = reason
            self.outages += 1
            log.warning(
                "task store unavailable (%s): writes wait and are retried until it is back; "
                "new tasks are refused meanwhile (503, retry later)",
                reason,
            )
            if self._probe is not None and (self._prober is None or self._prober.done()):
                with contextlib.suppress(RuntimeError):
                    self._prober = asyncio.get_running_loop().create_task(
                        self._probe_until_back(), name="task-store-probe"
                    )
        else:
            self._reason = reason
            log.debug("task store still unavailable (%s: %s)", reason, type(error).__name__)

    def succeeded(self, written: int = 0) -> None:
        """A store operation went through; `written` writes had waited for it."""
        if self._down_since is None:
            return
        waited = max(self._waited, written)
        log.info(
            "task store is back after %.1f s (%s); %d writes waited and are stored",
            time.monotonic() - self._down_since,
            self._reason,
            waited,
        )
        self._down_since = None
        self._reason = ""
        self._waited = 0

    def probe_passed(self) -> None:
        """A probe's write went through. Back, unless writes that wait failed
        lately (they retry by themselves and say when they are stored)."""
        if time.monotonic() - self._last_failure > 2 * RETRY_MAX + 1:
            self.succeeded()

    async def _probe_until_back(self) -> None:
        """Ask the store now and then while nothing else does: writes that wait
        retry by themselves and say when they went through (a probe's write may
        pass while theirs still fail, e.g. on a full disk)."""
        assert self._probe is not None
        delay = RETRY_MIN
        while self._down_since is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            if self._down_since is None:
                return
            try:
                await self._probe()
            except Exception as exc:
                if not is_transient(exc):
                    log.debug("task store probe failed", exc_info=True)
                self._reason = reason_of(exc)
                continue
            self.probe_passed()

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober


# Told of every StoreUnavailable raised to a request (server/busy.py answers
# the request with it: 503 + Retry-After, JSON-RPC -32000).
REFUSAL_HOOKS: list[Callable[[RetryLater], None]] = []


@contextlib.contextmanager
def refusing(health: StoreHealth | None) -> Iterator[None]:
    """A transient failure of the store inside the block is raised as
    `StoreUnavailable`: a retryable refusal naming no host, port or driver text."""
    try:
        yield
    except StoreUnavailable as exc:
        for hook in REFUSAL_HOOKS:
            hook(exc)
        raise
    except Exception as exc:
        if not is_transient(exc):
            raise
        if health is not None:
            health.failed(exc)
        refusal = StoreUnavailable(reason_of(exc))
        for hook in REFUSAL_HOOKS:
            hook(refusal)
        raise refusal from None


async def until_stored(
    operation: Callable[[], Awaitable[_T]],
    health: StoreHealth | None,
    *,
    waiting: int = 1,
    pause: Callable[[], Awaitable[None]] | None = None,
    max_delay: float = RETRY_MAX,
) -> _T:
    """`operation`, tried again after every transient failure of the store (no limit)."""
    delay = RETRY_MIN
    while True:
        try:
            result = await operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if health is not None:
                health.failed(exc, waiting)
            if pause is not None:
                await pause()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if health is not None:
            health.succeeded()
        return result
