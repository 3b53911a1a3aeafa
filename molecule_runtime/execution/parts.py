"""Converts between A2A's protobuf `Part`s and the adapter contract's plain values."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from a2a.types.a2a_pb2 import Message, Part
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Value

from molecule_runtime.adapters.base import DataPart, FilePart, InputPart, TextPart
from molecule_runtime.adapters.outputs import DataOutput, FileOutput


def _metadata(part: Part) -> dict[str, Any]:
    return json_format.MessageToDict(part.metadata) if part.HasField("metadata") else {}


def input_part(part: Part) -> InputPart | None:
    """One part of a user's message as plain data; None for an empty part."""
    kind = part.WhichOneof("content")
    if kind == "text":
        return TextPart(text=part.text, metadata=_metadata(part))
    if kind == "raw":
        return FilePart(
            name=part.filename,
            media_type=part.media_type,
            data_base64=base64.b64encode(part.raw).decode("ascii"),
            metadata=_metadata(part),
        )
    if kind == "url":
        return FilePart(
            name=part.filename, media_type=part.media_type, url=part.url, metadata=_metadata(part)
        )
    if kind == "data":
        return DataPart(data=json_format.MessageToDict(part.data), metadata=_metadata(part))
    return None


def input_parts(parts: Iterable[Part]) -> list[InputPart]:
    return [p for p in map(input_part, parts) if p is not None]


def usable(part: Part) -> bool:
    """A part an adapter can act on: non-blank text, a file, or data."""
    kind = part.WhichOneof("content")
    if kind == "text":
        return bool(part.text.strip())
    return kind in ("raw", "url", "data")


def has_usable_part(message: Message | None) -> bool:
    return message is not None and any(usable(p) for p in message.parts)


def json_value(data: Any) -> Value:
    """`data` as a protobuf Value; TypeError when it is not JSON."""
    try:
        # A round trip through json rejects what JSON cannot carry (NaN, sets, objects).
        plain = json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"DataOutput.data must be a JSON value: {exc}") from None
    return json_format.ParseDict(plain, Value())


def file_part(output: FileOutput) -> Part:
    part = Part(filename=output.name, media_type=output.media_type)
    if output.url is not None:
        part.url = output.url
    else:
        part.raw = output.data or b""
    return part


def data_part(output: DataOutput) -> Part:
    part = Part()
    part.data.CopyFrom(json_value(output.data))
    return part
