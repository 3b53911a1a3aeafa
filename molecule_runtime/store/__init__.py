"""The A2A task store: tasks, their event log (offsets), retention, and the factory."""

from molecule_runtime.store.engines import StoreConfigError
from molecule_runtime.store.event_log import LiveEventOffsets, TaskEventLog
from molecule_runtime.store.factory import Stores, open_configured_stores, open_stores
from molecule_runtime.store.group_commit import GroupCommitTaskStore
from molecule_runtime.store.observed import ObservedTaskStore
from molecule_runtime.store.retention import prune_events

__all__ = [
    "GroupCommitTaskStore",
    "LiveEventOffsets",
    "ObservedTaskStore",
    "StoreConfigError",
    "Stores",
    "TaskEventLog",
    "open_configured_stores",
    "open_stores",
    "prune_events",
]
