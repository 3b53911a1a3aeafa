"""Optional: adapters report GenAI semantic-convention attributes of the current model call."""

from opentelemetry import trace


def set_genai_attributes(
    *,
    system: str | None = None,
    request_model: str | None = None,
    response_model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> None:
    """Attach what is known to the running `llm_call` span (a no-op without tracing)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    values = {
        "gen_ai.system": system,
        "gen_ai.request.model": request_model,
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }
    for key, value in values.items():
        if value is not None:
            span.set_attribute(key, value)
