"""Routes an attempt's outputs into artifact events: text through a batcher per
artifact, files and data as whole parts, each to the artifact it names.

An artifact's last event (`lastChunk: true`) is its closing update: the whole
artifact as this attempt wrote it, `append: false`. Clients that follow
`append` replace what they built with the same content; Google ADK, which
ignores `append` and takes the `lastChunk` update for the whole artifact, gets
the whole answer instead of its tail (docs/clients.md). It costs the
artifact's bytes once more per artifact and turn, not per chunk.

A retry of an adapter that continues its answer (`continues_partial`) starts
from the turn's artifacts as stored (`continue_from`): the answer is kept and
appended to, so its closing update carries the stored text and the new; a file
or data part the retry yields again into the answer, equal to one already
stored there (an output of a replayed step), is not added a second time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from a2a.types.a2a_pb2 import Artifact as StoredArtifact
from a2a.types.a2a_pb2 import Part

from molecule_runtime.adapters.outputs import ANSWER, Artifact
from molecule_runtime.execution.batching import ChunkBatcher
from molecule_runtime.execution.events import TaskEvents, named_artifact_id, of_turn


@dataclass
class _Target:
    artifact_id: str
    name: str
    description: str = ""
    started: bool = False  # written by this attempt: later parts append
    batcher: ChunkBatcher | None = None
    # What this attempt wrote, for the closing update: runs of text (joined
    # once, at the end) and whole parts (files, data), in order.
    written: list[list[str] | Part] = field(default_factory=list)

    def keep(self, parts: list[Part]) -> None:
        for part in parts:
            if part.WhichOneof("content") != "text":
                self.written.append(part)
            elif self.written and isinstance(self.written[-1], list):
                self.written[-1].append(part.text)
            else:
                self.written.append([part.text])

    def whole(self) -> list[Part]:
        parts = [Part(text="".join(w)) if isinstance(w, list) else w for w in self.written]
        return parts or [Part(text="")]


class _TextSink:
    """What a target's ChunkBatcher writes to (it expects a TaskEvents' `chunk`)."""

    def __init__(self, writer: ArtifactWriter, target: _Target) -> None:
        self.writer = writer
        self.target = target

    async def chunk(self, text: str, *, append: bool, last: bool = False) -> None:
        # The batcher marks its tail as the last chunk; that is only true when
        # the attempt ends, not when a file interrupts the artifact's text.
        await self.writer.send(self.target, [Part(text=text)], last=last and self.writer.closing)

    async def settled(self) -> None:
        await self.writer.events.settled()


class ArtifactWriter:
    """The artifacts of one attempt. The first event an attempt sends to an
    artifact replaces it (append=False), so nothing of an earlier attempt stays."""

    def __init__(self, events: TaskEvents, batch_window: float) -> None:
        self.events = events
        self.batch_window = batch_window
        self.answer = _Target(events.artifact_id, ANSWER)
        self._targets: dict[str, _Target] = {events.artifact_id: self.answer}
        self.closing = False
        self.last_sent: set[str] = set()
        # Whole parts (files, data) the stored answer holds, by their bytes:
        # a continuing retry that yields one again does not add it twice.
        self._stored_parts: Counter[bytes] = Counter()

    def continue_from(self, stored: list[StoredArtifact]) -> str:
        """Continue the turn as stored instead of replacing it: the answer keeps
        its parts and later text appends to it. Returns the stored answer text."""
        for artifact in stored:
            if artifact.artifact_id != self.answer.artifact_id:
                continue  # named artifacts stay as stored unless written again
            self.answer.keep(list(artifact.parts))
            self.answer.started = True
            for part in artifact.parts:
                if part.WhichOneof("content") != "text":
                    self._stored_parts[part.SerializeToString(deterministic=True)] += 1
        return answer_text(stored, self.answer.artifact_id)

    def target(self, artifact: Artifact | None) -> _Target:
        if artifact is None or artifact.name == ANSWER:
            return self.answer
        artifact_id = named_artifact_id(self.events.artifact_id, artifact.name)
        target = self._targets.get(artifact_id)
        if target is None:
            target = _Target(artifact_id, artifact.name, artifact.description)
            self._targets[artifact_id] = target
        return target

    async def text(self, text: str, artifact: Artifact | None = None) -> int:
        """Stream a text chunk into its artifact; its length."""
        target = self.answer if artifact is None else self.target(artifact)
        if target.batcher is None:
            target.batcher = ChunkBatcher(_TextSink(self, target), self.batch_window)  # type: ignore[arg-type]
        await target.batcher.add(text)
        return len(text)

    async def part(self, part: Part, artifact: Artifact | None = None) -> None:
        """A whole part (file, data): after the text already streamed to its artifact."""
        target = self.target(artifact)
        if target is self.answer and self._stored_parts:
            key = part.SerializeToString(deterministic=True)
            if self._stored_parts[key] > 0:
                self._stored_parts[key] -= 1
                return
        if target.batcher is not None:
            batcher, target.batcher = target.batcher, None
            await batcher.close(flush=True)
        await self.send(target, [part])

    async def send(self, target: _Target, parts: list[Part], *, last: bool = False) -> None:
        target.keep(parts)
        append = target.started
        if last:
            # The closing update: the whole artifact, replacing what was streamed.
            parts, append = target.whole(), False
        await self.events.artifact(
            target.artifact_id,
            target.name,
            parts,
            append=append,
            last=last,
            description=target.description,
        )
        target.started = True
        if last:
            self.last_sent.add(target.artifact_id)
        else:
            self.last_sent.discard(target.artifact_id)

    async def close(self, *, flush: bool) -> None:
        """When `flush` (the stream ended normally) send what is buffered as each
        artifact's last chunk; otherwise drop it and stop the senders."""
        self.closing = flush
        error: BaseException | None = None
        for target in self._targets.values():
            batcher, target.batcher = target.batcher, None
            if batcher is None:
                continue
            try:
                await batcher.close(flush=flush)
            except BaseException as exc:  # close the others before raising
                error = error or exc
                flush = False
        if error is not None:
            raise error

    async def close_answer(self, *, restarted: bool) -> None:
        """End the answer with its closing update unless the batcher's tail was it:
        also when nothing was streamed by a retry (`restarted`), which empties it."""
        if self.answer.artifact_id in self.last_sent:
            return
        if self.answer.started or restarted:
            await self.send(self.answer, [], last=True)

    async def clear_earlier(self, known: dict[str, str]) -> None:
        """Empty the artifacts an earlier attempt of this turn wrote, except the
        answer (its first chunk replaces it, or the attempt's end clears it)."""
        for artifact_id in sorted(known):
            if artifact_id == self.answer.artifact_id or not of_turn(self.answer.artifact_id, artifact_id):
                continue
            if artifact_id in self._targets and self._targets[artifact_id].started:
                continue
            await self.events.artifact(
                artifact_id, known[artifact_id], [Part(text="")], append=False, last=True
            )


def answer_text(stored: list[StoredArtifact], answer_id: str) -> str:
    """The text of a turn's stored answer: its text parts joined."""
    return "".join(
        part.text
        for artifact in stored
        if artifact.artifact_id == answer_id
        for part in artifact.parts
        if part.WhichOneof("content") == "text"
    )
