"""Durable mode: each task is a Temporal workflow `task_receive` -> `llm_call` -> `task_complete`."""
