"""Report: an adapter that returns files and data, not only text.

As a template: copy it as `adapter.py` and make it yours. Run it:
ADAPTER_MODULE=adapter molecule-runtime   (from the folder holding adapter.py)

The user sends items as text ("apples 3, pears 5"), as a data part
({"rows": [{"item": "apples", "qty": 3}, ...]}) or as a CSV file with columns
item,qty. The agent answers with a line of text, a CSV file in the artifact
"report" and the totals as data in the artifact "summary", and completes with
a status message. A message without items is rejected, saying what to send.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

from molecule_runtime.adapters import (
    AdapterConfig,
    Artifact,
    BaseAdapter,
    DataOutput,
    Done,
    FileOutput,
    Output,
    Reject,
    TaskInput,
)

ITEM = re.compile(r"^\s*(?P<item>.+?)\s+(?P<qty>-?\d+(?:\.\d+)?)\s*$")


def rows_from_text(text: str) -> list[dict[str, Any]]:
    """"apples 3, pears 5" (commas or new lines between items) → rows."""
    rows = []
    for piece in re.split(r"[,\n;]", text):
        match = ITEM.match(piece)
        if match:
            rows.append({"item": match["item"], "qty": float(match["qty"])})
    return rows


def rows_from_csv(data: bytes) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    return [
        {"item": row["item"], "qty": float(row["qty"])}
        for row in reader
        if row.get("item") and row.get("qty")
    ]


def rows_of(task: TaskInput) -> list[dict[str, Any]]:
    """Every item the message carries: data parts, CSV files, then its text."""
    rows: list[dict[str, Any]] = []
    for value in task.data:
        if isinstance(value, dict):
            rows += [{"item": str(r["item"]), "qty": float(r["qty"])} for r in value.get("rows", [])]
    for file in task.files:
        data = file.data
        if data is not None and (file.media_type == "text/csv" or file.name.endswith(".csv")):
            rows += rows_from_csv(data)
    return rows + rows_from_text(task.text)


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["item", "qty"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"item": row["item"], "qty": f"{row['qty']:g}"})
    return out.getvalue().encode()


class Adapter(BaseAdapter):
    """Turns a list of items into a CSV report and a data summary.

    Options (`ADAPTER_OPTIONS`): `filename` of the CSV (default "report.csv").
    """

    def __init__(self) -> None:
        self.filename = "report.csv"

    @staticmethod
    def name() -> str:
        return "report"

    def description(self) -> str:
        return "Turns a list of items and quantities into a CSV report and totals."

    async def setup(self, config: AdapterConfig) -> None:
        self.filename = str(config.options.get("filename", self.filename))

    async def stream(self, task: TaskInput) -> AsyncIterator[str | Output]:
        rows = rows_of(task)
        if not rows:
            # Not a failure: the request is not something this agent does.
            yield Reject(
                'Send items with quantities: as text ("apples 3, pears 5"), as data '
                '({"rows": [{"item": "apples", "qty": 3}]}) or as a CSV file with columns item,qty.'
            )
            return
        total = sum(row["qty"] for row in rows)
        yield f"{len(rows)} items, {total:g} in all."
        yield FileOutput(
            self.filename,
            "text/csv",
            data=to_csv(rows),
            artifact=Artifact("report", "The items as CSV"),
        )
        largest = max(rows, key=lambda row: row["qty"])
        yield DataOutput(
            {"items": len(rows), "total": total, "largest": largest},
            artifact=Artifact("summary", "Totals"),
        )
        yield Done("Report ready.")
