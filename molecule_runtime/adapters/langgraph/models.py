"""Chooses the chat model from `MODEL` and the adapter options.

- a `model_factory` option wins: `module:callable` returning a LangChain chat model;
- `MODEL` empty or `local`: the bundled SmolLM2 served by llama.cpp in this process;
- `openai:<model>`: langchain-openai's ChatOpenAI, honouring `OPENAI_BASE_URL` and
  `OPENAI_API_KEY`, so any OpenAI-compatible endpoint works;
- any other `provider:model` (or a bare model name): LangChain's `init_chat_model`,
  which needs the provider's integration package (e.g. `langchain-anthropic`).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import AdapterConfig
from molecule_runtime.adapters.langgraph.imports import load_target
from molecule_runtime.adapters.langgraph.local_llm import (
    LOCAL_MODEL_NAME,
    LocalModelServer,
    LocalServerSettings,
    smollm2_path,
)
from molecule_runtime.adapters.langgraph.options import (
    LOCAL_MAX_TOKENS,
    LOCAL_TEMPERATURE,
    LangGraphOptions,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

LOCAL = "local"


class ModelConfigError(ValueError):
    """`MODEL` or `model_factory` does not name a usable chat model."""


@dataclass
class ChosenModel:
    model: BaseChatModel
    description: str
    local_server: LocalModelServer | None = None


def _limits(options: LangGraphOptions, *, local: bool) -> dict[str, Any]:
    max_tokens = options.max_tokens
    temperature = options.temperature
    if local:
        max_tokens = max_tokens if max_tokens is not None else LOCAL_MAX_TOKENS
        temperature = temperature if temperature is not None else LOCAL_TEMPERATURE
    limits: dict[str, Any] = {}
    if max_tokens is not None:
        limits["max_tokens"] = max_tokens
    if temperature is not None:
        limits["temperature"] = temperature
    return limits


async def choose_model(config: AdapterConfig, options: LangGraphOptions) -> ChosenModel:
    if options.model_factory:
        return ChosenModel(_from_factory(options.model_factory, config), options.model_factory)
    spec = (config.model or "").strip()
    if spec in ("", LOCAL):
        return await _local_model(options)
    provider, sep, name = spec.partition(":")
    if sep and not name:
        raise ModelConfigError(f"MODEL={spec!r}: expected 'provider:model'")
    if sep and provider == "openai":
        return ChosenModel(_openai_model(name, options), spec)
    try:
        from langchain.chat_models import init_chat_model

        if sep:
            model = init_chat_model(
                name, model_provider=provider, timeout=options.request_timeout,
                **_limits(options, local=False),
            )
        else:
            model = init_chat_model(
                spec, timeout=options.request_timeout, **_limits(options, local=False)
            )
    except ImportError as exc:
        raise ModelConfigError(
            f"MODEL={spec!r}: the provider's LangChain package is not installed ({exc})"
        ) from exc
    except ValueError as exc:
        raise ModelConfigError(f"MODEL={spec!r}: {exc}") from exc
    return ChosenModel(model, spec)


def _from_factory(target: str, config: AdapterConfig) -> BaseChatModel:
    from langchain_core.language_models import BaseChatModel

    factory = load_target(target, setting="model_factory")
    if not callable(factory):
        raise ModelConfigError(f"model_factory={target!r} is not callable")
    # A factory may take the AdapterConfig (to read its own options) or nothing.
    takes_config = bool(inspect.signature(factory).parameters)
    model = factory(config) if takes_config else factory()
    if not isinstance(model, BaseChatModel):
        raise ModelConfigError(
            f"model_factory={target!r} returned {type(model).__name__}, "
            "expected a LangChain BaseChatModel"
        )
    return model


def _openai_model(name: str, options: LangGraphOptions) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    kwargs: dict[str, Any] = {}
    if os.environ.get("OPENAI_BASE_URL"):
        kwargs["base_url"] = os.environ["OPENAI_BASE_URL"]
    return ChatOpenAI(
        model=name,
        streaming=True,
        timeout=options.request_timeout,
        **kwargs,
        **_limits(options, local=False),
    )


async def _local_model(options: LangGraphOptions) -> ChosenModel:
    path = Path(options.local_model_path).expanduser() if options.local_model_path else None
    if path is not None and not path.is_file():
        raise ModelConfigError(f"local_model_path={options.local_model_path!r}: no such file")
    settings = LocalServerSettings(
        model_path=(path or smollm2_path()).resolve(),
        context_size=options.context_size,
        threads=options.threads,
    )
    server = await LocalModelServer.acquire(settings)
    try:
        from langchain_openai import ChatOpenAI

        model = ChatOpenAI(
            model=LOCAL_MODEL_NAME,
            base_url=server.base_url + "/v1",
            api_key="not-needed",  # type: ignore[arg-type]
            streaming=True,
            timeout=options.request_timeout,
            max_retries=0,  # a local failure will not heal by retrying at once
            # Token counts on the stream's last chunk (off by default for a
            # custom base URL); the adapter reports them as the task's usage.
            stream_usage=True,
            **_limits(options, local=True),
        )
    except BaseException:
        await server.release()
        raise
    return ChosenModel(model, f"local:{settings.model_path.name}", local_server=server)
