"""Input parts and output kinds as plain data: conversion from and to A2A parts,
Temporal's JSON round trip, and the docs' examples run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from a2a.types.a2a_pb2 import Part
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Value
from temporalio.converter import DataConverter

from molecule_runtime.adapters import (
    Artifact,
    DataOutput,
    DataPart,
    Done,
    FileOutput,
    FilePart,
    Reject,
    TaskInput,
    TextOutput,
    TextPart,
)
from molecule_runtime.execution.parts import (
    data_part,
    file_part,
    has_usable_part,
    input_parts,
    json_value,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "adapters.md"


def _data(value: Any) -> Part:
    part = Part()
    part.data.CopyFrom(json_format.ParseDict(value, Value()))
    return part


def test_a2a_parts_become_plain_values_in_order() -> None:
    parts = input_parts(
        [
            Part(text="hi"),
            Part(raw=b"\x00\xff", filename="b.bin", media_type="application/octet-stream"),
            Part(url="https://x.test/a.png", filename="a.png", media_type="image/png"),
            _data({"a": [1, None, True]}),
            Part(),  # no content at all: skipped
        ]
    )
    assert [p.kind for p in parts] == ["text", "file", "file", "data"]
    text, raw, url, data = parts
    assert isinstance(text, TextPart) and text.text == "hi"
    assert isinstance(raw, FilePart) and raw.data == b"\x00\xff" and raw.size == 2 and raw.url == ""
    assert (raw.name, raw.media_type) == ("b.bin", "application/octet-stream")
    assert isinstance(url, FilePart) and url.data is None and url.size is None
    assert isinstance(data, DataPart) and data.data == {"a": [1, None, True]}


def test_task_input_with_parts_survives_temporals_json_converter() -> None:
    """Durable mode hands TaskInput through Temporal's default converter."""
    task = TaskInput(
        task_id="t",
        context_id="c",
        text="hi",
        message_id="m1",
        parts=input_parts(
            [Part(text="hi"), Part(raw=bytes(range(256)), filename="all.bin"), _data([1, "x"])]
        ),
    )
    converter = DataConverter.default.payload_converter
    payloads = converter.to_payloads([task])
    (back,) = converter.from_payloads(payloads, [TaskInput])
    assert back == task
    assert isinstance(back.parts[1], FilePart) and back.parts[1].data == bytes(range(256))
    assert back.data == [[1, "x"]] and back.files == [back.parts[1]]
    # An input recorded before parts existed still decodes.
    (old,) = converter.from_payloads(
        converter.to_payloads([{"task_id": "t", "context_id": "c", "text": "x"}]), [TaskInput]
    )
    assert old.parts == [] and old.message_id == ""


def test_usable_parts() -> None:
    from a2a.types.a2a_pb2 import Message

    assert not has_usable_part(None)
    assert not has_usable_part(Message(parts=[Part(text=" \n")]))
    assert has_usable_part(Message(parts=[Part(text=""), Part(raw=b"")]))
    assert has_usable_part(Message(parts=[_data(None)]))


def test_outputs_become_a2a_parts() -> None:
    part = file_part(FileOutput("r.csv", "text/csv", data=b"a,b\n"))
    assert (part.raw, part.filename, part.media_type) == (b"a,b\n", "r.csv", "text/csv")
    part = file_part(FileOutput("r.png", "image/png", url="https://x.test/r.png"))
    assert part.WhichOneof("content") == "url" and part.url == "https://x.test/r.png"
    part = data_part(DataOutput({"n": 1.5, "l": ["a"]}))
    assert json_format.MessageToDict(part.data) == {"n": 1.5, "l": ["a"]}
    with pytest.raises(TypeError, match="JSON value"):
        json_value({"s": {1, 2}})
    with pytest.raises(TypeError, match="JSON value"):
        json_value(float("nan"))
    with pytest.raises(ValueError):
        FileOutput("x")  # neither bytes nor url
    with pytest.raises(ValueError):
        FileOutput("x", data=b"", url="https://x.test")
    with pytest.raises(ValueError):
        Artifact(" ")


def _docs_example(name: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    matches = [b for b in blocks if f'return "{name}"' in b]
    assert len(matches) == 1, f"docs/adapters.md: one example named {name}"
    return matches[0]


async def _run(adapter: Any, task: TaskInput) -> list[Any]:
    return [item async for item in adapter.stream(task)]


async def test_the_docs_files_and_data_example_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(_docs_example("reporter"), namespace)
    adapter = namespace["Adapter"]()
    csv_in = FilePart(name="in.csv", media_type="text/csv", data_base64="YSxiCjEsMgo=")  # a,b\n1,2
    task = TaskInput("t", "c", "", parts=[csv_in, DataPart({"rows": [{"a": "3", "b": "4"}]})])
    items = await _run(adapter, task)
    assert items[0] == "Read 2 rows. "
    report = items[1]
    assert isinstance(report, FileOutput) and report.data == b"a,b\r\n3,4\r\n1,2\r\n"
    assert isinstance(items[2], TextOutput) and items[2].artifact == report.artifact
    assert isinstance(items[4], DataOutput) and items[4].data == {"rows": 2}
    assert items[-1] == Done("Report ready.")
    rejected = await _run(adapter, TaskInput("t", "c", "hello", parts=[TextPart("hello")]))
    assert len(rejected) == 1 and isinstance(rejected[0], Reject)


async def test_the_docs_message_reply_example_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(_docs_example("clock"), namespace)
    adapter = namespace["Adapter"]()
    assert adapter.replies_with_message is True
    (reply,) = await _run(adapter, TaskInput("t", "c", "time?"))
    assert reply.endswith(" UTC.")
