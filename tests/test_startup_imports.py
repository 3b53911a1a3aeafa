"""What a server start loads: Temporal's SDK only in durable mode, its tracing
interceptor only when traces are exported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from molecule_runtime.durable.connection import _interceptors


def test_the_server_modules_load_without_temporal() -> None:
    # A fresh interpreter: this test process has imported Temporal already.
    check = (
        "import sys, molecule_runtime.process, molecule_runtime.cli; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'temporalio'); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_tracing_interceptor_is_installed_only_when_traces_are_exported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert _interceptors() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    from temporalio.contrib.opentelemetry import TracingInterceptor

    assert [type(i) for i in _interceptors()] == [TracingInterceptor]
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert _interceptors() == []
