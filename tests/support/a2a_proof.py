"""The a2a-proof conformance runner (PyPI `a2a-proof`), in a virtualenv of its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.tool_venv import tool_venv

A2A_PROOF_VERSION = "0.16.0"


def a2a_proof_bin() -> Path:
    """The `a2a-proof` command (built on first use, then cached)."""
    return (
        tool_venv(f"a2a-proof-{A2A_PROOF_VERSION}", [f"a2a-proof=={A2A_PROOF_VERSION}"])
        / "a2a-proof"
    )


def run_contract(
    contract: Path, agent_url: str, transport: str, *, timeout: float = 120
) -> dict[str, Any]:
    """Run every scenario of `contract` against the agent at `agent_url` over `transport`
    (JSONRPC, HTTP+JSON or GRPC); the JSON report. The contract reads the URL from
    `${AGENT_URL}`."""
    done = subprocess.run(
        [str(a2a_proof_bin()), "run", str(contract), "--format", "json", "--transport", transport],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"AGENT_URL": agent_url, "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    if not done.stdout.strip():
        raise AssertionError(f"a2a-proof gave no report (exit {done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """Every failed check of a report, one line each (empty when it passed)."""
    found = [f"card: {f}" for f in (report.get("card") or {}).get("failures", [])]
    for scenario in report["scenarios"]:
        for trial in scenario["trials"]:
            if trial.get("error"):
                found.append(f"{scenario['name']}: {trial['error']}")
            for turn in trial["turns"]:
                found += [f"{scenario['name']} turn {turn['index']}: {f}" for f in turn["failures"]]
    return found
