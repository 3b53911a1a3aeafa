"""`molecule-runtime` command line: `serve` (default) and `worker`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from pydantic import ValidationError

from molecule_runtime import __version__
from molecule_runtime.adapters.loader import AdapterResolutionError
from molecule_runtime.config import Settings
from molecule_runtime.observability.logs import configure_logging
from molecule_runtime.observability.tracing import quiet_sdk_spans_unless_tracing

log = logging.getLogger("molecule_runtime")

# CLI flag -> settings field; every flag overrides the environment variable of the same setting.
FLAGS: list[tuple[str, str, type, str]] = [
    ("--adapter-module", "adapter_module", str, "module exporting `Adapter` (ADAPTER_MODULE)"),
    ("--runtime", "runtime", str, "built-in adapter name (RUNTIME, default echo)"),
    ("--host", "host", str, "listen address (HOST, default 127.0.0.1)"),
    ("--port", "port", int, "listen port (PORT, default 8000)"),
    ("--public-url", "public_url", str, "base URL in the agent card (PUBLIC_URL)"),
    ("--data-dir", "data_dir", str, "local state directory (MOLECULE_DATA_DIR)"),
    ("--workspace-id", "workspace_id", str, "agent name in telemetry/workflow ids (WORKSPACE_ID)"),
    ("--task-store-url", "task_store_url", str, "memory | sqlite+aiosqlite:///… | postgresql+asyncpg://… (TASK_STORE_URL)"),
    ("--temporal-host", "temporal_host", str, "host:port or 'embedded' (TEMPORAL_HOST)"),
    ("--temporal-namespace", "temporal_namespace", str, "(TEMPORAL_NAMESPACE)"),
    ("--temporal-task-queue", "temporal_task_queue", str, "(TEMPORAL_TASK_QUEUE)"),
    ("--model", "model", str, "model for the adapter (MODEL)"),
    ("--log-level", "log_level", str, "DEBUG, INFO, WARNING, ERROR (LOG_LEVEL)"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molecule-runtime",
        description="Serve an agent over A2A 1.0; durable on Temporal when TEMPORAL_HOST is set.",
        epilog="Every flag can also be set with the environment variable named in its help.",
    )
    parser.add_argument("--version", action="version", version=f"molecule-runtime {__version__}")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "worker"],
        help="serve: A2A server (default); worker: Temporal worker only, no HTTP",
    )
    for flag, _, kind, help_text in FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=help_text)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        field: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, field, _, _ in FLAGS
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(f"molecule-runtime: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    # Before the a2a-sdk is imported: it reads the switch once, at import.
    quiet_sdk_spans_unless_tracing()
    from molecule_runtime.process import run_server, run_worker
    from molecule_runtime.server.principals import AuthConfigError
    from molecule_runtime.store import StoreConfigError

    try:
        if args.command == "worker":
            return asyncio.run(run_worker(settings))
        return asyncio.run(run_server(settings))
    except (AdapterResolutionError, AuthConfigError, StoreConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
