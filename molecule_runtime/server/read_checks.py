"""Checks of the read methods' parameters (GetTask, ListTasks) before the SDK
runs them: a bad request is a client error, never an internal one."""

from __future__ import annotations

from a2a.types.a2a_pb2 import GetTaskRequest, ListTasksRequest, TaskState
from a2a.utils.errors import InvalidParamsError

from molecule_runtime.server.complexity import RequestBounds


def check_list(params: ListTasksRequest, bounds: RequestBounds | None) -> None:
    # A numeric status outside the enum (`?status=10`) otherwise reaches the
    # store, whose TaskState.Name() raises: a 500 for a bad request.
    if params.status not in TaskState.values():
        raise InvalidParamsError(f"unknown task status {params.status}")
    if bounds is not None and params.HasField("history_length"):
        bounds.check_history_length(params.history_length)


def check_get(params: GetTaskRequest, bounds: RequestBounds | None) -> None:
    if bounds is not None and params.HasField("history_length"):
        bounds.check_history_length(params.history_length)
