"""Running a task, the same in both modes (docs/architecture.md): admission
control (`admission.py`, the front door: a place in line, then a running slot);
what the request handler hands over (`handoff.py`); dispatch (`dispatch.py`:
the route, `route.py`; direct runs, `direct.py`, ended at shutdown by
`drain.py`; durable runs and resumes through `route.DurableRoute`; message
replies, `message_reply.py`; live delivery, `live.py`); the adapter's input
(`request_input.py`, `inputs.py`, `parts.py`); the attempt that runs the
adapter (`attempt.py`, `pull.py`, `artifacts.py`, `batching.py`, `steps.py`,
`usage.py`) and the events it emits (`events.py`, delivered live or `headless.py`). The
A2A executor that hands requests to dispatch is the server's
(`server/executor.py`); the workflow's activities call the attempt too
(`durable/llm_call.py`)."""
