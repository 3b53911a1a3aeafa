"""Task versions as the integers the event log records (SSE event ids)."""

from __future__ import annotations

from a2a.server.cluster import TaskVersion


def version_number(version: TaskVersion) -> int:
    """A database store's version as an integer; 0 for MISSING (the in-memory store)."""
    value = version._value  # the SDK exposes no accessor for it
    return value if isinstance(value, int) else 0
