"""Virtualenvs for third-party tools the tests run (a pinned client, a conformance
suite), kept apart from the project's venv so their pins never touch it.

Each is created once per name under the system's temp dir (or MOLECULE_TEST_CACHE)
and reused by later runs; a lock keeps parallel test processes from building it twice.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(
        os.environ.get("MOLECULE_TEST_CACHE") or Path(tempfile.gettempdir()) / "molecule-test-cache"
    )


def tool_venv(name: str, packages: list[str]) -> Path:
    """The bin directory of a virtualenv `name` holding `packages` (pip specifiers).

    `name` should change whenever `packages` do (put the versions in it): a built
    venv is reused as it is.
    """
    cache = cache_dir()
    venv = cache / name
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            # No pip of its own: this interpreter's pip installs into it (faster).
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True
            )
            install = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *packages,
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if install.returncode != 0:
                raise RuntimeError(
                    f"pip install {' '.join(packages)} failed:\n{install.stderr[-4000:]}"
                )
            ready.write_text(" ".join(packages))
    return venv / "bin"
