"""Usage accounting: what the attempts of a task reported through `report_usage`.

The ledger is kept on the task itself, under `Meta.USAGE` in its metadata, and
written with a status update (the SDK merges a status update's metadata into the
task). Each write carries the whole ledger, because a metadata key is replaced,
not merged. Entries are keyed by (turn, attempt, model), so an attempt that ran
in another process (a durable retry, recovery) and this process's own entries
combine without counting anything twice: every attempt adds, the total is what
was paid for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from a2a.types.a2a_pb2 import Task
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace

from molecule_runtime.adapters.usage import UsageReport, current_recorder
from molecule_runtime.observability import metrics
from molecule_runtime.vocabulary import Meta

Key = tuple[int, int, str]  # turn, attempt, model


@dataclass
class Entry:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None

    def add(self, report: UsageReport) -> None:
        self.input_tokens += report.input_tokens
        self.output_tokens += report.output_tokens
        if report.cost is not None:
            self.cost = (self.cost or 0.0) + report.cost


class UsageLedger:
    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}

    @classmethod
    def from_task(cls, task: Task | None) -> UsageLedger:
        ledger = cls()
        if task is None or Meta.USAGE not in task.metadata:
            return ledger
        stored = MessageToDict(task.metadata).get(Meta.USAGE) or {}
        for item in stored.get("attempts") or []:
            try:
                key = (int(item["turn"]), int(item["attempt"]), str(item.get("model", "")))
                cost = item.get("cost")
                ledger.entries[key] = Entry(
                    int(item.get("input_tokens", 0)),
                    int(item.get("output_tokens", 0)),
                    float(cost) if cost is not None else None,
                )
            except (KeyError, TypeError, ValueError):
                continue  # written by someone else: not ours to interpret
        return ledger

    def merge(self, other: UsageLedger) -> None:
        """Add the entries this ledger does not have (an attempt runs in one place only)."""
        for key, entry in other.entries.items():
            self.entries.setdefault(key, entry)

    def add(self, turn: int, attempt: int, report: UsageReport) -> None:
        self.entries.setdefault((turn, attempt, report.model), Entry()).add(report)

    def attempt_totals(self, turn: int, attempt: int) -> Entry:
        total = Entry()
        for (t, a, model), entry in self.entries.items():
            if (t, a) == (turn, attempt):
                total.add(UsageReport(entry.input_tokens, entry.output_tokens, model, entry.cost))
        return total

    def metadata(self) -> dict[str, Any]:
        """The task metadata that records this ledger."""
        attempts: list[dict[str, Any]] = []
        total = Entry()
        for (turn, attempt, model), entry in sorted(self.entries.items()):
            item: dict[str, Any] = {
                "turn": turn,
                "attempt": attempt,
                "model": model,
                "input_tokens": entry.input_tokens,
                "output_tokens": entry.output_tokens,
            }
            if entry.cost is not None:
                item["cost"] = entry.cost
            attempts.append(item)
            total.add(UsageReport(entry.input_tokens, entry.output_tokens, model, entry.cost))
        summary: dict[str, Any] = {
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "total_tokens": total.input_tokens + total.output_tokens,
            "attempts": attempts,
        }
        if total.cost is not None:
            summary["cost"] = total.cost
        return {Meta.USAGE: summary}


def turn_of_artifact(task_id: str, artifact_id: str) -> int:
    """The turn an answer artifact belongs to (see events.artifact_id_for)."""
    suffix = artifact_id.removeprefix(f"{task_id}-answer")
    return int(suffix[1:]) if suffix.startswith("-") and suffix[1:].isdigit() else 1


class AttemptUsage:
    """Collects the reports of one attempt; `pending` says the task has not been told yet."""

    def __init__(self, ledger: UsageLedger, turn: int, attempt: int) -> None:
        self.ledger = ledger
        self.turn = turn
        self.attempt = attempt
        self.pending = False
        # The attempt's `llm_call` span (current where the attempt starts), also
        # when the adapter reports from inside a span of its own.
        self.span = trace.get_current_span()

    def __call__(self, report: UsageReport) -> None:
        self.ledger.add(self.turn, self.attempt, report)
        self.pending = True
        # Counted where the attempt ran, when it was reported: what was paid for,
        # also when the attempt fails afterwards and is retried.
        model = report.model or "unknown"
        metrics.USAGE_INPUT_TOKENS.labels(model).inc(report.input_tokens)
        metrics.USAGE_OUTPUT_TOKENS.labels(model).inc(report.output_tokens)
        if report.cost is not None:
            metrics.USAGE_COST.labels(model).inc(report.cost)
        self.annotate(self.span)

    def annotate(self, span: trace.Span) -> None:
        """GenAI semantic-convention attributes of this attempt on its `llm_call` span."""
        if not span.is_recording():
            return
        total = self.ledger.attempt_totals(self.turn, self.attempt)
        span.set_attribute("gen_ai.usage.input_tokens", total.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", total.output_tokens)
        models = sorted(
            {m for (t, a, m) in self.ledger.entries if (t, a) == (self.turn, self.attempt) and m}
        )
        if models:
            span.set_attribute("gen_ai.response.model", models[-1] if len(models) == 1 else ",".join(models))
        if total.cost is not None:
            span.set_attribute("molecule.usage.cost", total.cost)

    def take(self) -> Mapping[str, Any] | None:
        """The metadata to send now, or None when nothing new was reported."""
        if not self.pending:
            return None
        self.pending = False
        return self.ledger.metadata()

    @contextmanager
    def recording(self) -> Iterator[None]:
        token = current_recorder.set(self)
        try:
            yield
        finally:
            current_recorder.reset(token)
