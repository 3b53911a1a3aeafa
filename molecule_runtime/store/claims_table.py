"""A message id claim and the table that keeps claims (store/message_ids.py takes them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

_METADATA = MetaData()
MESSAGE_IDS = Table(
    "molecule_message_ids",
    _METADATA,
    Column("owner", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("task_id", Text, nullable=False),
    Column("context_id", Text, nullable=False),
    # What the message said (role, taskId as sent, parts): a repeat must match it.
    Column("digest", Text, nullable=False),
    # Naive UTC, like the SDK's timestamps.
    Column("created_at", DateTime, nullable=False),
    # NULL: the message is answered by a task. Otherwise it is answered by a
    # Message: empty until it is sent, then the Message (serialised protobuf).
    Column("reply", LargeBinary, nullable=True),
    PrimaryKeyConstraint("owner", "message_id", name="pk_molecule_message_ids"),
    Index("ix_molecule_message_ids_created_at", "created_at"),
    Index("ix_molecule_message_ids_context", "owner", "context_id", "created_at"),
)

# Taken where free, skipped where held: who holds an id is read afterwards. Built
# once: constructing the statement per claim cost more CPU than running it.
INSERT_FREE = {
    "sqlite": sqlite.insert(MESSAGE_IDS).on_conflict_do_nothing(
        index_elements=["owner", "message_id"]
    ),
    "postgresql": postgresql.insert(MESSAGE_IDS).on_conflict_do_nothing(
        index_elements=["owner", "message_id"]
    ),
}
@dataclass(frozen=True)
class MessageClaim:
    owner: str
    message_id: str
    task_id: str
    context_id: str
    digest: str
    created_at: datetime  # naive UTC
    reply: bytes | None = None  # see the table's `reply` column

    @property
    def replies(self) -> bool:
        """Answered by a Message, not a task."""
        return self.reply is not None


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def claim_row(claim: MessageClaim) -> dict[str, object]:
    return {
        "owner": claim.owner,
        "message_id": claim.message_id,
        "task_id": claim.task_id,
        "context_id": claim.context_id,
        "digest": claim.digest,
        "created_at": claim.created_at,
        "reply": claim.reply,
    }


def _add_reply_column(conn: Connection) -> None:
    """Tables created before the `reply` column get it (create_all adds no columns)."""
    if "reply" in {c["name"] for c in inspect(conn).get_columns(MESSAGE_IDS.name)}:
        return
    kind = LargeBinary().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {MESSAGE_IDS.name} ADD COLUMN reply {kind}"))


def create_table(conn: Connection) -> None:
    """The claims table, created if missing (and given the `reply` column if it lacks it)."""
    _METADATA.create_all(conn)
    _add_reply_column(conn)
