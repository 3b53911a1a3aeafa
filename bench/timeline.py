"""Where a workflow's time goes, from Temporal's own history event timestamps.

Run as `python -m bench.timeline <temporal address> <workflow id>...`; prints one
JSON list: for each history event position (same shape for every run), its label
and the median milliseconds since WorkflowExecutionStarted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client


def _label(event) -> str:  # type: ignore[no-untyped-def]
    name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        name += f" ({event.activity_task_scheduled_event_attributes.activity_type.name})"
    if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
        details = event.marker_recorded_event_attributes.details
        if "data" in details:
            data = json.loads(details["data"].payloads[0].data)
            name += f" (local {data.get('activity_type') or data.get('activityType')})"
    return name


async def main(address: str, ids: list[str]) -> list[dict[str, object]]:
    client = await Client.connect(address)
    runs: list[list[tuple[str, float]]] = []
    for wf_id in ids:
        history = await client.get_workflow_handle(wf_id).fetch_history()
        events = list(history.events)
        t0 = events[0].event_time.ToNanoseconds()
        runs.append([(_label(e), (e.event_time.ToNanoseconds() - t0) / 1e6) for e in events])
    shape = [label for label, _ in runs[0]]
    same = [r for r in runs if [label for label, _ in r] == shape]
    return [
        {"event": label, "ms": statistics.median(r[i][1] for r in same), "runs": len(same)}
        for i, label in enumerate(shape)
    ]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:]))), flush=True)
