"""OpenTelemetry SDK set-up from the standard OTEL_* environment.

Nothing is installed (the API stays a no-op, negligible overhead) unless an
OTLP endpoint is configured and OTEL_SDK_DISABLED is not true.
"""

from __future__ import annotations

import logging
import os
import threading

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
    # Shut down by shutdown_tracing, within its bound, not by an exit hook without one.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans over OTLP/HTTP")
    return True


# How long the last spans may take to leave at shutdown: the exporter retries an
# unreachable collector with back-off, which would hold the process past any grace.
SHUTDOWN_FLUSH_SECONDS = 2.0


def shutdown_tracing(timeout: float = SHUTDOWN_FLUSH_SECONDS) -> None:
    """Export what is left, for at most `timeout` seconds; then the spans are dropped."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if not callable(shutdown):
        return
    # A daemon thread: the exit does not wait for an export that outlives the bound.
    flushing = threading.Thread(target=shutdown, name="otel-shutdown", daemon=True)
    flushing.start()
    flushing.join(timeout)
    if flushing.is_alive():
        log.warning(
            "tracing: the last spans were not exported within %.1f s at shutdown "
            "(is the OTLP collector reachable?); they are dropped",
            timeout,
        )
