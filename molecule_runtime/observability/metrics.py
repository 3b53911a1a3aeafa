"""Prometheus metrics, served at /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)

TASKS = Counter(
    "molecule_tasks_total",
    "Tasks served by this process, by final state and mode",
    ["state", "mode"],
)
TASK_DURATION = Histogram(
    "molecule_task_duration_seconds",
    "Time from accepting a task to its final state",
    ["mode"],
    buckets=_LATENCY_BUCKETS,
)
FIRST_CHUNK = Histogram(
    "molecule_time_to_first_chunk_seconds",
    "Time from accepting a task to its first streamed chunk",
    ["mode"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("molecule_tasks_in_flight", "Tasks currently running in this process", ["mode"])
RETRIES = Counter("molecule_task_retries_total", "llm_call attempts after the first (durable mode)")
STEPS = Counter(
    "molecule_steps_total",
    "Durable steps of adapters: recorded (ran and journaled) or replayed (from the journal)",
    ["outcome"],
)
DISPATCH_DELAY = Histogram(
    "molecule_attempt_dispatch_delay_seconds",
    "From Temporal starting an llm_call attempt (the worker's core took it) to its code "
    "running here, by Temporal's clock",
    buckets=_LATENCY_BUCKETS,
)
HEADLESS = Counter(
    "molecule_headless_attempts_total",
    "llm_call attempts run without a client stream in this process (crash recovery)",
)
FALLBACKS = Counter(
    "molecule_fallbacks_total", "Tasks run directly because Temporal was unreachable"
)
TEMPORAL_CONNECTED = Gauge(
    "molecule_temporal_connected", "1 when durable mode is connected to Temporal, else 0"
)
# Admission control (molecule_runtime/execution/admission.py).
ADMISSION_RUNNING = Gauge(
    "molecule_admission_running_tasks",
    "Tasks holding a running slot (MOLECULE_MAX_RUNNING_TASKS)",
)
ADMISSION_QUEUED = Gauge(
    "molecule_admission_queued_tasks",
    "Accepted tasks waiting for a running slot (MOLECULE_MAX_QUEUED_TASKS)",
)
ADMISSION_REFUSED = Counter(
    "molecule_admission_refused_total",
    "Requests refused because the running slots and the line were full (nothing created)",
)
PRINCIPAL_REFUSED = Counter(
    "molecule_principal_refused_total",
    "Requests refused by a per-principal limit (nothing created or done)",
    ["reason"],
)
# Usage the adapters reported (report_usage), counted where each attempt ran:
# retried attempts count too, since they were paid for.
USAGE_INPUT_TOKENS = Counter(
    "molecule_usage_input_tokens_total", "Input (prompt) tokens reported by adapters", ["model"]
)
USAGE_OUTPUT_TOKENS = Counter(
    "molecule_usage_output_tokens_total", "Output (completion) tokens reported by adapters", ["model"]
)
USAGE_COST = Counter(
    "molecule_usage_cost_total", "Cost reported by adapters, in the adapter's currency", ["model"]
)

# Subscriptions read the task event log; followers of one task share one reader.
EVENT_LOG_READS = Counter(
    "molecule_event_log_reads_total", "Reads of the task event log (replays, shared readers)"
)
EVENT_LOG_FOLLOWERS = Gauge(
    "molecule_event_log_followers", "Subscriptions following a task's event log here"
)
EVENT_LOG_READERS = Gauge(
    "molecule_event_log_readers", "Shared event-log readers here (one per followed task)"
)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
LOOP_STALLS = Counter(
    "molecule_event_loop_stalls_total",
    "Times the event loop was blocked for more than a second",
    ["adapter"],
)
LOOP_STALL_SECONDS = Counter(
    "molecule_event_loop_stall_seconds_total",
    "Seconds the event loop was blocked, in stalls of more than a second",
    ["adapter"],
)
