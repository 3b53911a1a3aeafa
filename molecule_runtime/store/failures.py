"""What a failure of the task store means: one that passes (retry, never drop),
or the runtime's own mistake; its reason in words that name no host, port or
driver; and the retryable refusal (`StoreUnavailable`) new work gets meanwhile."""

from __future__ import annotations

from collections.abc import Iterator

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

from molecule_runtime.refusals import RetryLater

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
