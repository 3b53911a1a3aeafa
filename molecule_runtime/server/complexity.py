"""Request complexity limits, checked by the request handler before anything is
claimed, admitted or stored, so they hold on every binding (JSON-RPC 1.0, the 0.3
methods, REST and gRPC all reach the handler with the same protobuf request).

One request is one client's, but its cost is everyone's: a message of 250,000
parts was accepted under the 4 MiB body cap, held the event loop for 11 s, and
each later ListTasks of its sender returned it whole. So a message has at most
MOLECULE_MAX_MESSAGE_PARTS parts, the metadata of a request at most
MOLECULE_MAX_METADATA_BYTES, and a request may ask for at most
MOLECULE_MAX_HISTORY_LENGTH messages of history. Over HTTP the body's JSON
nesting and number of values were bounded before parsing (server/limits.py);
gRPC requests arrive parsed, so the same two bounds are checked here on their
structured values (data parts, metadata), stopping as soon as one is exceeded.

A refusal is InvalidParamsError (JSON-RPC -32602, REST 400, gRPC
INVALID_ARGUMENT) whose message names the setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from a2a.types.a2a_pb2 import Message, SendMessageRequest
from a2a.utils.errors import InvalidParamsError
from google.protobuf.struct_pb2 import ListValue, Struct, Value

from molecule_runtime.config import Settings

# Call-context state key: the binding checked its body's JSON before parsing.
SHAPE_CHECKED = "molecule.shape_checked"


class _TooComplex(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


@dataclass(frozen=True)
class RequestBounds:
    max_parts: int
    max_metadata_bytes: int
    max_history_length: int
    max_depth: int
    max_values: int

    @classmethod
    def of(cls, settings: Settings) -> RequestBounds:
        return cls(
            max_parts=settings.max_message_parts,
            max_metadata_bytes=settings.max_metadata_bytes,
            max_history_length=settings.max_history_length,
            max_depth=settings.max_json_depth,
            max_values=settings.max_json_values,
        )

    def check_send(self, params: SendMessageRequest, *, walk_values: bool) -> None:
        """A SendMessage / SendStreamingMessage request; raises InvalidParamsError."""
        message = params.message
        if len(message.parts) > self.max_parts:
            raise InvalidParamsError(
                message=f"a message has at most {self.max_parts} parts, this one "
                f"{len(message.parts)} (MOLECULE_MAX_MESSAGE_PARTS)"
            )
        metadata = params.metadata.ByteSize() + message.metadata.ByteSize()
        metadata += sum(part.metadata.ByteSize() for part in message.parts)
        if metadata > self.max_metadata_bytes:
            raise InvalidParamsError(
                message=f"the request's metadata takes {metadata} bytes, more than "
                f"{self.max_metadata_bytes} (MOLECULE_MAX_METADATA_BYTES)"
            )
        if params.HasField("configuration") and params.configuration.HasField("history_length"):
            self.check_history_length(params.configuration.history_length)
        if walk_values:
            self._check_values(params, message)

    def check_history_length(self, requested: int) -> None:
        if requested > self.max_history_length:
            raise InvalidParamsError(
                message=f"historyLength is at most {self.max_history_length}, not "
                f"{requested} (MOLECULE_MAX_HISTORY_LENGTH)"
            )

    def _check_values(self, params: SendMessageRequest, message: Message) -> None:
        structs: list[Struct | Value] = [params.metadata, message.metadata]
        for part in message.parts:
            structs.append(part.metadata)
            if part.HasField("data"):
                structs.append(part.data)
        counter = _Counter(self.max_values, self.max_depth)
        try:
            for struct in structs:
                counter.visit(struct, 1)
        except _TooComplex as exc:
            raise InvalidParamsError(message=exc.message) from None


class _Counter:
    """Counts structured values depth-first, and stops at the first bound exceeded."""

    def __init__(self, max_values: int, max_depth: int) -> None:
        self.left = max_values
        self.max_values = max_values
        self.max_depth = max_depth

    def visit(self, node: Struct | ListValue | Value, depth: int) -> None:
        if depth > self.max_depth:
            raise _TooComplex(
                f"the request is nested deeper than {self.max_depth} levels "
                "(MOLECULE_MAX_JSON_DEPTH)"
            )
        self.left -= 1
        if self.left < 0:
            raise _TooComplex(
                f"the request holds more than {self.max_values} values (MOLECULE_MAX_JSON_VALUES)"
            )
        if isinstance(node, Value):
            kind = node.WhichOneof("kind")
            if kind == "struct_value":
                self.visit(node.struct_value, depth)
            elif kind == "list_value":
                self.visit(node.list_value, depth)
            return
        children = node.fields.values() if isinstance(node, Struct) else node.values
        for child in children:
            self.visit(child, depth + 1)
