"""The user's message as chat-model content: text, data as JSON text, images as
image blocks when the model takes them, other files as a short note naming them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from molecule_runtime.adapters.base import DataPart, FilePart, TaskInput, TextPart

Block = dict[str, Any]


@dataclass(frozen=True)
class ModelInputs:
    """What the model can read besides text (from its LangChain profile)."""

    images: bool = False  # image bytes (base64)
    image_urls: bool = False


def model_inputs(model: Any) -> ModelInputs:
    """Read the model's LangChain profile (`image_inputs`, `image_url_inputs`); none known: text only."""
    profile = getattr(model, "profile", None) or {}
    if not isinstance(profile, dict):
        return ModelInputs()
    images = bool(profile.get("image_inputs"))
    return ModelInputs(images=images, image_urls=images and bool(profile.get("image_url_inputs")))


def _size(size: int | None) -> str:
    if size is None:
        return "by URL"
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KiB"


def file_note(part: FilePart) -> str:
    kind = part.media_type or "unknown type"
    name = part.name or "unnamed"
    return f"[Attached file {name!r} ({kind}, {_size(part.size)}): this model cannot read it.]"


def data_text(part: DataPart) -> str:
    return "Attached data (JSON):\n" + json.dumps(part.data, ensure_ascii=False, indent=1)


def file_block(part: FilePart, inputs: ModelInputs) -> Block:
    if part.media_type.startswith("image/"):
        if part.url and inputs.image_urls:
            return {"type": "image", "url": part.url}
        if not part.url and inputs.images:
            return {"type": "image", "base64": part.data_base64, "mime_type": part.media_type}
    return {"type": "text", "text": file_note(part)}


def user_content(task: TaskInput, inputs: ModelInputs) -> str | list[Block]:
    """The message's parts in the order sent. A string unless an image block is
    among them: every chat model takes a string, not every one takes blocks."""
    if all(isinstance(p, TextPart) for p in task.parts):
        return task.text
    blocks: list[Block] = []
    for part in task.parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, DataPart):
            blocks.append({"type": "text", "text": data_text(part)})
        elif isinstance(part, FilePart):
            blocks.append(file_block(part, inputs))
    if all(b["type"] == "text" for b in blocks):
        return "\n\n".join(b["text"] for b in blocks)
    if not any(b["type"] == "text" for b in blocks):
        # Some providers refuse a message without any text.
        blocks.insert(0, {"type": "text", "text": "(see the attached image)"})
    return blocks
