"""OpenTelemetry SDK set-up from the standard OTEL_* environment.

Nothing is installed (the API stays a no-op, negligible overhead) unless an
OTLP endpoint is configured and OTEL_SDK_DISABLED is not true.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace

log = logging.getLogger(__name__)

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_requested() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    return any(os.environ.get(name) for name in _ENDPOINT_VARS)


# The a2a-sdk wraps its hot path (every event) in spans; without an exporter
# they are discarded but still cost ~10 % of the event loop under load.
SDK_SPANS_SWITCH = "OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"


def quiet_sdk_spans_unless_tracing() -> None:
    """Turn the SDK's own spans off when no traces are exported (an explicit setting wins)."""
    if not tracing_requested():
        os.environ.setdefault(SDK_SPANS_SWITCH, "false")


def configure_tracing(service_name: str) -> bool:
    """Install a TracerProvider exporting over OTLP/HTTP; True if tracing is on."""
    if not tracing_requested():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {}
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = service_name
    resource = Resource.create(attributes)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans over OTLP/HTTP")
    return True


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()
