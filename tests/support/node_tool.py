"""npm packages the tests run (a pinned JavaScript client), installed once per name under
the test cache (tool_venv.cache_dir) and reused; a lock keeps parallel test processes
from installing twice. Only the npm registry is used, through npm itself."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from tests.support.tool_venv import cache_dir


def node_modules(name: str, packages: list[str]) -> Path:
    """The node_modules directory of an npm prefix `name` holding `packages` (npm specifiers).

    `name` should change whenever `packages` do (put the versions in it)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH (node and npm are needed for the JS SDK tests)")
    cache = cache_dir()
    prefix = cache / name
    ready = prefix / ".ready"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            prefix.mkdir(parents=True, exist_ok=True)
            install = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent", *packages],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if install.returncode != 0:
                raise RuntimeError(f"npm install {' '.join(packages)} failed:\n{install.stderr[-4000:]}")
            ready.write_text(" ".join(packages))
    return prefix / "node_modules"
