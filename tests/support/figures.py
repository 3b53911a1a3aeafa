"""Figures observed by the reliability and load tests, collected into one JSON file.

Each test records what it measured under a name; the file is rewritten after
every record, so a partial run still leaves its figures. The path is
$MOLECULE_FIGURES_FILE, else `reliability-figures.json` in pytest's temp root.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

_figures: dict[str, Any] = {}


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
    }


def record(path: Path, name: str, figures: dict[str, Any]) -> None:
    target = Path(os.environ.get("MOLECULE_FIGURES_FILE") or path)
    if target.exists():
        try:
            _figures.update(json.loads(target.read_text()))
        except ValueError:
            pass
    _figures[name] = {**figures, "machine": machine()}
    target.write_text(json.dumps(_figures, indent=2, sort_keys=True))
    print(f"\n[figures] {name}: {json.dumps(figures, sort_keys=True)} -> {target}")
