"""Metrics (Prometheus), traces (OpenTelemetry: set-up and stage spans) and logs."""
