"""Whether the task store can take writes now, and what a failure means.

A database that restarts, recovers from a crash, fills its disk or is locked
costs time, never a task: writes that fail for such a reason wait and are
retried, with back-off and without limit, for as long as the process lives
(store/group_commit.py, store/message_ids.py). Meanwhile new work is refused
with a retryable error (`StoreUnavailable`: REST 503 + `Retry-After`), since
it could not be stored before it is acknowledged.

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

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from molecule_runtime.execution.admission import RetryLater

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# PostgreSQL error classes and codes that say "not now" rather than "never":
# connection exceptions (08), transaction rollbacks such as serialization
# failures and deadlocks (40), insufficient resources such as a full disk or
# too many connections (53), lock not available (55P03), operator
# intervention such as a shutdown or a server starting up or in recovery
# (57P01-57P05), system errors such as I/O errors (58).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_CODES = frozenset({"55P03", "55006", "25006"})
# SQLite's errors that pass: locked, busy, I/O, full, read-only, cannot open
# the file, out of memory (not SQLITE_ERROR: no such table, bad SQL).
_SQLITE_TRANSIENT = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
)
# Back-off between two tries of a write the store refused for now.
RETRY_MIN, RETRY_MAX = 0.05, 2.0
# What a refused client is told to wait before sending again.
RETRY_AFTER_SECONDS = 2


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, the driver's error it wraps and what caused those."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__]
        if isinstance(orig, BaseException):
            todo.append(orig)


def _sqlstate(error: BaseException) -> str | None:
    for cause in _causes(error):
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(cause, attribute, None)
            if isinstance(code, str) and len(code) == 5:
                return code
    return None


def _sqlite_error(error: BaseException) -> str | None:
    """SQLite's name for the error (SQLITE_BUSY, SQLITE_FULL, ...), if it is SQLite's."""
    for cause in _causes(error):
        name = getattr(cause, "sqlite_errorname", None)
        if isinstance(name, str):
            return name
    return None


def is_transient(error: BaseException) -> bool:
    """A failure of the store that passes: retry the write later, never drop it.

    Not transient: what the runtime itself got wrong (a broken constraint, bad
    data, SQL the database does not accept); retrying would never help.
    """
    if isinstance(error, StoreUnavailable):
        return True
    if isinstance(error, IntegrityError | DataError | ProgrammingError | NotSupportedError):
        return _sqlstate(error) in {"40001", "40P01"}  # a rollback the driver filed there
    code = _sqlstate(error)
    if code is not None:
        return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES
    sqlite_name = _sqlite_error(error)
    if sqlite_name is not None:
        return sqlite_name.startswith(_SQLITE_TRANSIENT)
    if isinstance(error, OperationalError | InterfaceError | PoolTimeout):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return any(
        isinstance(cause, OSError | TimeoutError | ConnectionError | EOFError)
        or type(cause).__name__
        in {"InterfaceError", "ConnectionDoesNotExistError", "InternalClientError"}
        for cause in _causes(error)
    )


def reason_of(error: BaseException) -> str:
    """Why the store cannot write, in words that name no host, port or driver."""
    if isinstance(error, StoreUnavailable):
        return error.why
    code = _sqlstate(error) or ""
    text = " ".join(str(cause) for cause in _causes(error)).lower()
    if code == "53100" or "disk is full" in text or "no space left" in text:
        return "disk full"
    if code == "25006" or "readonly" in text or "read-only" in text:
        return "read-only"
    if code == "57P03" or "starting up" in text or "recovery" in text:
        return "database starting up"
    if code in {"57P01", "57P02"} or "shutting down" in text:
        return "database shutting down"
    if code == "53300" or "too many" in text:
        return "too many connections"
    if "database is locked" in text or code in {"55P03", "40P01", "40001"}:
        return "locked"
    if isinstance(error, PoolTimeout):
        return "no free connection"
    if code.startswith("58") or "disk i/o" in text:
        return "I/O error"
    return "unreachable"


class StoreUnavailable(RetryLater):
    """The task store cannot take writes right now: the request was refused
    before anything was created; sending it again later is safe."""

    reason = "STORE_UNAVAILABLE"

    def __init__(self, why: str) -> None:
        self.retry_after = RETRY_AFTER_SECONDS
        self.why = why
        super().__init__(
            f"The task store is unavailable right now ({why}): nothing was created. Send the "
            f"request again in {self.retry_after} seconds; a message sent again with the same "
            "messageId is taken once and never run twice."
        )

    def metadata(self) -> dict[str, str]:
        return {**super().metadata(), "cause": self.why}


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
