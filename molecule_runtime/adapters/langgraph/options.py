"""Typed view of the `langgraph` adapter's settings (`MODEL`, `ADAPTER_OPTIONS`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from molecule_runtime.adapters.base import AdapterConfig

# The tiny default model rambles; these keep a reply to seconds, not minutes.
LOCAL_MAX_TOKENS = 256
LOCAL_TEMPERATURE = 0.2


class OptionsError(ValueError):
    """An adapter option has the wrong type or value."""


@dataclass(frozen=True)
class LangGraphOptions:
    """`ADAPTER_OPTIONS` keys understood by the adapter; other keys are ignored."""

    system_prompt_file: str | None = None
    tools_module: str | None = None
    model_factory: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    recursion_limit: int = 25
    request_timeout: float = 120.0
    local_model_path: str | None = None
    context_size: int = 2048
    threads: int = 0
    # Whether the model continues a conversation that ends with an assistant
    # message (prefill): a retried model call then continues its partial
    # answer. None: yes for the local llama.cpp model, no for the others.
    model_prefill: bool | None = None

    @classmethod
    def from_config(cls, config: AdapterConfig) -> LangGraphOptions:
        raw = config.options or {}
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw or raw[f.name] is None:
                continue
            values[f.name] = _coerce(f.name, str(f.type), raw[f.name])
        options = cls(**values)
        if options.max_tokens is not None and options.max_tokens < 1:
            raise OptionsError("max_tokens must be at least 1")
        if options.recursion_limit < 1:
            raise OptionsError("recursion_limit must be at least 1")
        return options

    def system_prompt(self, config: AdapterConfig) -> str:
        """`SYSTEM_PROMPT` wins; else the prompt file's text; else none."""
        if config.system_prompt:
            return config.system_prompt
        if self.system_prompt_file:
            path = Path(self.system_prompt_file).expanduser()
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise OptionsError(f"system_prompt_file={self.system_prompt_file!r}: {exc}") from exc
        return ""


def _coerce(name: str, annotation: str, value: Any) -> Any:
    try:
        if "bool" in annotation:
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if "int" in annotation:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if "float" in annotation:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (TypeError, ValueError):
        raise OptionsError(
            f"ADAPTER_OPTIONS[{name!r}]={value!r} is not a valid {annotation}"
        ) from None
