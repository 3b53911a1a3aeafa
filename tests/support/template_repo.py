"""The layout of a repo made from a template: a directory holding only `adapter.py`."""

from __future__ import annotations

import shutil
from pathlib import Path

PROBE_ADAPTER = Path(__file__).with_name("probe_adapter.py")


def template_repo(directory: Path, adapter: Path = PROBE_ADAPTER) -> Path:
    """Create `directory` with `adapter` copied in alone as `adapter.py` (the probe adapter
    by default): a server started there with ADAPTER_MODULE=adapter has nothing else
    from this repository on hand, as in a user's repo."""
    directory.mkdir()
    shutil.copy(adapter, directory / "adapter.py")
    return directory
