"""What the PostgreSQL driver logs that is not an error of the runtime's.

asyncpg opens a connection by first asking the server whether it speaks TLS
(sslmode "prefer", its default). When that attempt is given up before the server
answers (its connect timeout under a burst: the pool then opens another), the
closed socket fails the attempt's internal future with ConnectionError('unexpected
connection_lost() call'); nobody awaits it any more, so asyncio logs it at ERROR
as "Future exception was never retrieved". Seen 3 times per run with 500
concurrent durable tasks on PostgreSQL, every task completed exactly: the note is
demoted to DEBUG. Any other unretrieved exception is logged as asyncio logs it.
"""

from __future__ import annotations

import logging

_UNRETRIEVED = "Future exception was never retrieved"
_LOST = "unexpected connection_lost() call"
_ASYNCIO_LOG = logging.getLogger("asyncio")


class _CancelledQueryNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or not record.getMessage().startswith(_UNRETRIEVED):
            return True
        if _LOST not in record.getMessage() and not _lost(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return _ASYNCIO_LOG.isEnabledFor(logging.DEBUG)


def _lost(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return isinstance(exc, ConnectionError) and str(exc) == _LOST


_ASYNCIO_LOG.addFilter(_CancelledQueryNote())
