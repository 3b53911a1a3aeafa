"""Running a task, in both modes: admission control (`admission.py`, the front
door: a place in line, then a running slot), what the request handler hands
over (`handoff.py`), dispatch (`dispatch.py`: route, direct run, durable run or
resume, message replies, live delivery, drain), the events of a task
(`events.py`) and the attempt that runs the adapter (`attempt.py`). The A2A
executor that hands requests to dispatch is the server's (`server/executor.py`)."""
