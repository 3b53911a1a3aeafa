"""A virtualenv with the real a2a-sdk 0.3 client (from PyPI), for compatibility tests.

Created once per version under the system's temp dir (or MOLECULE_TEST_CACHE) and
reused by later runs; a lock keeps parallel test processes from building it twice.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SDK03_VERSION = "0.3.26"
# Run by that virtualenv's python: one 0.3 client session, printed as JSON.
V03_CLIENT = Path(__file__).resolve().parent.parent / "fixtures" / "v03_client.py"


def sdk03_python(version: str = SDK03_VERSION) -> Path:
    """The python of a virtualenv holding `a2a-sdk==version` and grpcio."""
    cache = Path(os.environ.get("MOLECULE_TEST_CACHE") or Path(tempfile.gettempdir()) / "molecule-test-cache")
    venv = cache / f"a2a-sdk-{version}"
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"a2a-sdk-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            # No pip of its own: this interpreter's pip installs into it (faster).
            subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
            packages = [f"a2a-sdk=={version}", "grpcio"]  # grpcio: its gRPC transport
            install = subprocess.run(
                [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                 "--disable-pip-version-check", *packages],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if install.returncode != 0:
                raise RuntimeError(f"pip install a2a-sdk=={version} failed:\n{install.stderr[-4000:]}")
            ready.write_text(version)
    return python
