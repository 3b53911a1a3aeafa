"""What the adapter reads from the graph's event stream: the answer's text
tokens, the token usage a model call reported, whether the reply stopped at
max_tokens, and which failures a retry cannot fix; the gen_ai identity of the
chosen model for the attempt's span."""

from __future__ import annotations

from typing import Any

from molecule_runtime.adapters.usage import report_usage

# HTTP statuses a retry cannot fix (bad request, auth, unknown model, ...).
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 422})


def _reply_cut(message: Any) -> bool:
    """Whether a model's reply ended at max_tokens (see `_stopped_at_limit`)."""
    response = getattr(message, "response_metadata", None) or {}
    reason = response.get("finish_reason") or response.get("stop_reason")
    return reason in ("length", "max_tokens", "MAX_TOKENS")


def genai_identity(
    description: str, model: Any, *, factory: bool
) -> tuple[str | None, str | None]:
    """(gen_ai.system, gen_ai.request.model) for the chosen model, where known."""
    if factory or ":" not in description:
        name = getattr(model, "model_name", None) or getattr(model, "model", None)
        return None, str(name) if name else None
    provider, name = description.split(":", 1)
    return ("llama.cpp" if provider == "local" else provider), name


def _add_usage(usage: dict[str, int], event: dict[str, Any], default_model: str = "") -> None:
    """Sum the token usage a chat model reported for one call (when it reports any),
    and report it to the runtime, which stores and counts it per attempt."""
    output = (event.get("data") or {}).get("output")
    metadata = getattr(output, "usage_metadata", None) or {}
    reported = {}
    for key in usage:
        value = metadata.get(key)
        if isinstance(value, int):
            usage[key] += value
            reported[key] = value
    if reported:
        response = getattr(output, "response_metadata", None) or {}
        model = str(response.get("model_name") or response.get("model") or default_model)
        if model.startswith("/"):  # llama.cpp answers with the GGUF's path: keep its name
            model = model.rsplit("/", 1)[-1]
        report_usage(**reported, model=model)


def _stopped_at_limit(event: dict[str, Any]) -> bool:
    """Whether a chat model's reply ended because it reached max_tokens
    (OpenAI-compatible servers, llama.cpp's included, say `finish_reason: length`;
    Anthropic says `stop_reason: max_tokens`)."""
    return _reply_cut((event.get("data") or {}).get("output"))


def _stream_text(event: dict[str, Any]) -> str:
    """The text of a chat-model token event; tool-call chunks and other events give ''."""
    if event.get("event") != "on_chat_model_stream":
        return ""
    # LangGraph's convention for models whose tokens must not reach the user.
    if "nostream" in (event.get("tags") or ()):
        return ""
    chunk = (event.get("data") or {}).get("chunk")
    text = getattr(chunk, "text", None)
    # `.text` keeps only text content blocks: tool-call arguments never leak.
    return str(text) if text else ""


def _permanent_failure(exc: Exception) -> str | None:
    """A message when retrying cannot help (bad credentials, unknown model, loops)."""
    if type(exc).__name__ == "GraphRecursionError":
        return f"agent exceeded recursion_limit: {exc}"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status in _PERMANENT_STATUSES:
        return f"model request rejected (HTTP {status}): {exc}"
    return None
