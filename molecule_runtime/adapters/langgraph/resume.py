"""Where a retried attempt of a task turn picks the graph up, and what it streams.

The answer an attempt streams is, in order, the text of every model call of the
turn. A retry finds in the turn's checkpoint the calls that completed (`done`:
their text) and, from the runtime, what earlier attempts streamed and the store
kept (`partial`). An adapter that continues (`continues_partial`) streams only
what comes after `partial`:

- `done` is longer than `partial` (the store had not taken a completed call's
  last chunks): the rest of `done` is streamed from the checkpoint, not
  generated again;
- `partial` is longer than `done`: the call that was interrupted had streamed
  `partial[len(done):]`; the model continues that text (prefill).

An adapter that does not continue streams the whole answer again: `done` from
the checkpoint, then the interrupted call from its start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Key of the run config's `configurable` that carries the prefix to continue.
# Keys starting with "__" stay out of the checkpoints' metadata.
CONTINUATION_KEY = "__molecule_continuation"


class Continuation:
    """The prefix the first model call of this run continues, handed out once."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.used = False

    def take(self) -> str:
        prefix, self.prefix = self.prefix, ""
        self.used = self.used or bool(prefix)
        return prefix


@dataclass(frozen=True)
class ResumePlan:
    replay: str  # text of completed calls to stream again, from the checkpoint
    prefix: str  # what the interrupted call had streamed: the next call continues it


def plan_resume(done: str, partial: str, *, continues: bool) -> ResumePlan:
    """What to stream from the checkpoint, and what the next model call continues."""
    if not continues:
        return ResumePlan(replay=done, prefix="")
    if partial.startswith(done):
        return ResumePlan(replay="", prefix=partial[len(done) :])
    if done.startswith(partial):
        return ResumePlan(replay=done[len(partial) :], prefix="")
    # Not one the prefix of the other: the checkpoint is not of the run that
    # streamed `partial` (e.g. it was deleted). The stored text stands (a
    # continuing adapter never takes text back); the graph goes on after it.
    log.warning(
        "the turn's checkpoint (%d characters of answer) does not match the %d characters "
        "already stored; continuing after the stored text",
        len(done),
        len(partial),
    )
    return ResumePlan(replay="", prefix="")
