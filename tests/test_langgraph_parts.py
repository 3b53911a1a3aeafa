"""The langgraph adapter with files and data: data as JSON text, files it cannot
read as a note naming them, images as image blocks for a model that reads them.

The adapter runs in-process against the scripted fake model, which records the
messages it was given.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from molecule_runtime.adapters.base import AdapterConfig, DataPart, FilePart, TaskInput, TextPart
from molecule_runtime.adapters.langgraph import LangGraphAdapter
from molecule_runtime.adapters.langgraph.content import ModelInputs, model_inputs, user_content
from tests.fixtures.langgraph_fake_models import ScriptedChatModel, scripted

PNG = base64.b64encode(b"\x89PNG fake").decode()


def vision(config: Any) -> ScriptedChatModel:
    """The scripted model, with a profile saying it reads images (bytes and URLs)."""
    model = scripted(config)
    model.profile = {"image_inputs": True, "image_url_inputs": True}
    return model


def task_with_parts() -> TaskInput:
    parts = [
        TextPart("Summarise these."),
        DataPart({"city": "Oslo", "temps": [3, 5]}),
        FilePart(name="photo.png", media_type="image/png", data_base64=PNG),
        FilePart(name="spec.pdf", media_type="application/pdf", url="https://x.test/spec.pdf"),
    ]
    return TaskInput("t1", "c1", "Summarise these.", parts=parts)


async def seen_by_model(tmp_path: Path, factory: str, task: TaskInput) -> Any:
    record = tmp_path / "record.jsonl"
    adapter = LangGraphAdapter()
    await adapter.setup(
        AdapterConfig(
            workspace_id="w",
            data_dir=tmp_path,
            options={"model_factory": factory, "fake_record": str(record)},
        )
    )
    try:
        text = "".join([chunk async for chunk in adapter.stream(task)])
    finally:
        await adapter.aclose()
    assert text == "hello from the fake model"
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    return calls[0][-1]["content"]


async def test_a_text_model_gets_data_as_json_and_notes_for_files(tmp_path: Path) -> None:
    content = await seen_by_model(tmp_path, "tests.fixtures.langgraph_fake_models:scripted", task_with_parts())
    assert isinstance(content, str)
    assert content.startswith("Summarise these.\n\nAttached data (JSON):\n")
    assert json.loads(content.split("(JSON):\n", 1)[1].split("\n\n[")[0]) == {"city": "Oslo", "temps": [3, 5]}
    assert "[Attached file 'photo.png' (image/png, 9 bytes): this model cannot read it.]" in content
    assert "'spec.pdf' (application/pdf, by URL)" in content


async def test_a_model_that_reads_images_gets_image_blocks(tmp_path: Path) -> None:
    content = await seen_by_model(tmp_path, "tests.test_langgraph_parts:vision", task_with_parts())
    assert isinstance(content, list)
    assert [b["type"] for b in content] == ["text", "text", "image", "text"]
    assert content[2] == {"type": "image", "base64": PNG, "mime_type": "image/png"}
    assert "cannot read it" in content[3]["text"]  # a PDF is still only named


async def test_a_text_only_message_is_plain_text_as_before(tmp_path: Path) -> None:
    task = TaskInput("t1", "c1", "hi", parts=[TextPart("hi")])
    assert await seen_by_model(tmp_path, "tests.test_langgraph_parts:vision", task) == "hi"


@pytest.mark.parametrize(
    "profile,expected",
    [
        (None, ModelInputs()),
        ({"image_inputs": True}, ModelInputs(images=True)),
        ({"image_inputs": False, "image_url_inputs": True}, ModelInputs()),
    ],
)
def test_model_inputs_come_from_the_profile(profile: Any, expected: ModelInputs) -> None:
    model = ScriptedChatModel(script=[{"text": "x"}], profile=profile)
    assert model_inputs(model) == expected


def test_an_image_url_goes_as_a_url_block_when_the_model_takes_urls() -> None:
    url = FilePart(name="a.jpg", media_type="image/jpeg", url="https://x.test/a.jpg")
    task = TaskInput("t", "c", "", parts=[url])
    blocks = user_content(task, ModelInputs(images=True, image_urls=True))
    assert blocks == [
        {"type": "text", "text": "(see the attached image)"},
        {"type": "image", "url": "https://x.test/a.jpg"},
    ]
    assert "cannot read it" in str(user_content(task, ModelInputs(images=True)))
