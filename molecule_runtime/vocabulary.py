"""The runtime's words, in one place: modes, stages, outcomes and the keys it
writes into task metadata. Every use goes through these names."""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How a task runs (recorded on the task under `Meta.MODE`)."""

    DIRECT = "direct"
    DURABLE = "durable"


class ServiceMode(StrEnum):
    """What a process does with new tasks right now (`/readyz`)."""

    DIRECT = "direct"
    DURABLE = "durable"
    DIRECT_FALLBACK = "direct-fallback"  # durable configured, Temporal out of reach


class Stage(StrEnum):
    """The three stages of every task, in both modes (activity and span names)."""

    TASK_RECEIVE = "task_receive"
    LLM_CALL = "llm_call"
    TASK_COMPLETE = "task_complete"


class ConcurrentMessages(StrEnum):
    """What a message to a conversation whose earlier task still runs does."""

    REJECT = "reject"
    ENQUEUE = "enqueue"
    INTERRUPT = "interrupt"
    PARALLEL = "parallel"


class Delivery(StrEnum):
    """Where a durable stage's events go."""

    LIVE = "live"  # the client's stream is open in this process
    HEADLESS = "headless"  # straight to the task store (recovery, another process)


class Outcome(StrEnum):
    """How a turn of a task ended, as the workflow and metrics name it."""

    COMPLETED = "completed"
    CANCELED = "canceled"
    FAILED = "failed"
    REJECTED = "rejected"
    INPUT_REQUIRED = "input-required"
    WORKING = "working"
    # The server gave up waiting for Temporal; reported as failed until the
    # workflow's real outcome overwrites it.
    LOST = "lost"
    # task_receive found the task already run directly: the workflow stops.
    RAN_DIRECTLY = "direct"


class Meta:
    """Keys the runtime writes into task and message metadata."""

    MODE = "molecule.mode"  # Mode the task runs in
    INSTANCE = "molecule.instance"  # the instance that accepted it (start-up sweep)
    LOST_CONTACT = "molecule.lost_contact"  # set with Outcome.LOST
    USAGE = "molecule.usage"  # tokens/cost the attempts reported (execution/usage.py)
    CREATED = "molecule.created"  # when the task was created (ISO 8601, UTC)
    ATTEMPT = "molecule.attempt"  # the attempt running now, from the second on (retries)
    # The request metadata of the task's latest turn: {"message_id", "metadata"}
    # (durable stages rebuild the adapter's input from the store).
    REQUEST = "molecule.request"
    MESSAGE_KIND = "molecule.kind"  # on agent messages: "question" for input-required
    # On each event a gRPC stream sends: its offset in the task's event log
    # (a string, as SSE's `id:`), the value to resume from with `last-event-id`.
    EVENT_ID = "molecule.event_id"
    QUESTION = "question"
