"""Requests per minute per principal (MOLECULE_PRINCIPAL_REQUESTS_PER_MINUTE).

A token bucket per principal: a full minute's worth may arrive at once, then
requests are let in at the steady rate. A refused request did nothing and can
simply be sent again after `Retry-After` (server/busy.py answers it). Counted
per process, like admission control: N replicas let in up to N times the rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from starlette.requests import Request

from molecule_runtime.observability import metrics
from molecule_runtime.refusals import RetryLater

# Principals whose bucket is remembered; the least recently seen are dropped
# (a dropped bucket is full again, which only ever errs on the generous side).
_REMEMBERED = 100_000


class RateLimitedError(RetryLater):
    http_status = 429
    status = "RESOURCE_EXHAUSTED"
    reason = "PRINCIPAL_RATE_LIMIT"

    def __init__(self, per_minute: int, retry_after: int) -> None:
        self.per_minute = per_minute
        self.retry_after = retry_after
        super().__init__(
            f"Too many requests: at most {per_minute} a minute per caller "
            "(MOLECULE_PRINCIPAL_REQUESTS_PER_MINUTE). Nothing was done; send the request "
            f"again in {retry_after} seconds."
        )

    def metadata(self) -> dict[str, str]:
        return {**super().metadata(), "requestsPerMinute": str(self.per_minute)}


def owner_of_request(request: Request) -> str:
    """The owner scope of the request's principal ('' when auth is off)."""
    user = request.scope.get("user")
    return str(getattr(user, "display_name", "")) if user is not None else ""


class RequestRate:
    """Token buckets of `per_minute` requests, one per principal."""

    def __init__(self, per_minute: int, *, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0  # tokens a second
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, owner: str) -> None:
        """Take one request's token, or raise RateLimitedError."""
        now = self._clock()
        tokens, then = self._buckets.get(owner, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * self._rate)
        if tokens < 1.0:
            self._buckets[owner] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / self._rate))
            metrics.PRINCIPAL_REFUSED.labels(RateLimitedError.reason).inc()
            raise RateLimitedError(self.per_minute, retry_after)
        self._buckets[owner] = (tokens - 1.0, now)
        self._buckets.move_to_end(owner)
        while len(self._buckets) > _REMEMBERED:
            self._buckets.popitem(last=False)
