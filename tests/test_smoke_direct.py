"""Smoke test of the harness: echo over real HTTP/SSE with the a2a-sdk client."""

from a2a.types.a2a_pb2 import TaskState

from tests.support.a2a import make_client, stream_events, task_text, user_message


async def test_echo_stream(server_factory) -> None:
    server = server_factory()
    client = await make_client(server.url)
    events = [e async for e in stream_events(client, user_message("hello brave new world"))]
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task"
    assert kinds.count("artifact_update") >= 4
    task_id = events[0].task.id
    from a2a.types.a2a_pb2 import GetTaskRequest

    task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_text(task) == "hello brave new world"
    await client.close()
