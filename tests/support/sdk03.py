"""A virtualenv with the real a2a-sdk 0.3 client (from PyPI), for compatibility tests."""

from __future__ import annotations

from pathlib import Path

from tests.support.tool_venv import tool_venv

SDK03_VERSION = "0.3.26"
# Run by that virtualenv's python: one 0.3 client session, printed as JSON.
V03_CLIENT = Path(__file__).resolve().parent.parent / "fixtures" / "v03_client.py"


def sdk03_python(version: str = SDK03_VERSION) -> Path:
    """The python of a virtualenv holding `a2a-sdk==version` and grpcio (its gRPC transport)."""
    return tool_venv(f"a2a-sdk-{version}", [f"a2a-sdk=={version}", "grpcio"]) / "python"
