"""A request refused before anything was created: the client sends it again later.

Raised by admission control (execution/admission.py), the per-principal limits
(server/quotas.py), the task store while it cannot write (store/health.py) and
the request handler; server/busy.py (and gRPC) answer every one alike.
"""

from __future__ import annotations

from a2a.utils.errors import A2AError

# What a refused client is told to wait before retrying, unless the refusal knows better.
RETRY_AFTER_SECONDS = 5


class RetryLater(A2AError):
    """A request refused before anything was created: send it again later.

    server/busy.py answers it on every binding (the SDK's error tables know only
    its own errors): REST `http_status` with `Retry-After`, JSON-RPC -32000.
    """

    http_status = 503
    status = "UNAVAILABLE"
    reason = "SERVER_BUSY"
    retry_after: int = RETRY_AFTER_SECONDS

    def metadata(self) -> dict[str, str]:
        return {"retryAfterSeconds": str(self.retry_after)}
