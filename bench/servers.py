"""The benchmark's own A2A servers, built like ours (a2a-sdk 1.3 + Starlette + uvicorn):

- `floor_a`: a bare a2a-sdk server whose executor does nothing but emit the
  same event sequence our runtime emits for the trivial adapter (Task, working,
  N artifact chunks, last-chunk marker, completed). Same task store kind as the
  runtime's default: SQLite through a2a-sdk's `VersionedDatabaseTaskStore` +
  `DatabaseTaskEventStream` (WAL): the SDK's own per-event transactions, not the runtime's store.
- `design_c`: the reference design this project replaces, rebuilt minimally on
  the same server: every task is a workflow of three *regular* activities on one
  shared task queue (no local activities, no eager workflow start), the worker
  in the same process reaching the live event queue through a dict, and a *new*
  artifact per streamed chunk.

Run as `python -m bench.servers floor_a|design_c` with PORT, DATA_DIR (and
TEMPORAL_ADDRESS for design_c) in the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.cluster import DatabaseTaskEventStream, VersionedDatabaseTaskStore
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    Part,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from bench.adapter import Adapter as BenchAdapter
from bench.workflows import ReferenceInput, ReferenceTaskWorkflow
from molecule_runtime.adapters import AdapterConfig, TaskInput


def _status(state: TaskState) -> TaskStatus:
    status = TaskStatus(state=state)
    status.timestamp.FromDatetime(datetime.now(UTC))
    return status


def _status_event(task_id: str, context_id: str, state: TaskState) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=_status(state))


def _chunk_event(
    task_id: str, context_id: str, artifact_id: str, text: str, *, append: bool, last: bool = False
) -> TaskArtifactUpdateEvent:
    return TaskArtifactUpdateEvent(
        task_id=task_id,
        context_id=context_id,
        artifact=Artifact(artifact_id=artifact_id, name="answer", parts=[Part(text=text)]),
        append=append,
        last_chunk=last,
    )


def _metadata(context: RequestContext) -> dict[str, Any]:
    message = context.message
    if message is not None and message.HasField("metadata"):
        return json_format.MessageToDict(message.metadata)
    return {}


async def _submitted(context: RequestContext, queue: EventQueue) -> tuple[str, str]:
    task_id, context_id = str(context.task_id), str(context.context_id)
    task = Task(id=task_id, context_id=context_id, status=_status(TaskState.TASK_STATE_SUBMITTED))
    if context.message is not None:
        task.history.append(context.message)
    await queue.enqueue_event(task)
    return task_id, context_id


class Release:
    """SIGUSR1 wakes every parked task (the RSS measurement), like bench.adapter."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def install(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.fire)

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


class NoOpExecutor(AgentExecutor):
    """Floor A: the protocol's events for N chunks, and nothing else.

    (`hold` in the metadata parks the task after its first chunk, for the RSS figures.)
    """

    def __init__(self, release: Release) -> None:
        self.release = release

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = await _submitted(context, event_queue)
        await event_queue.enqueue_event(
            _status_event(task_id, context_id, TaskState.TASK_STATE_WORKING)
        )
        artifact_id = f"{task_id}-answer"
        meta = _metadata(context)
        for i in range(int(meta.get("chunks", 8))):
            await event_queue.enqueue_event(
                _chunk_event(task_id, context_id, artifact_id, f"c{i} ", append=i > 0)
            )
            if i == 0 and meta.get("hold"):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.event.wait(), float(meta["hold"]))
        await event_queue.enqueue_event(
            _chunk_event(task_id, context_id, artifact_id, "", append=True, last=True)
        )
        await event_queue.enqueue_event(
            _status_event(task_id, context_id, TaskState.TASK_STATE_COMPLETED)
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        return None


# ---- design C ----------------------------------------------------------------

LIVE: dict[str, EventQueue] = {}


class ReferenceActivities:
    def __init__(self, adapter: BenchAdapter) -> None:
        self.adapter = adapter

    @activity.defn(name="ref_receive")
    async def ref_receive(self, inp: ReferenceInput) -> None:
        queue = LIVE.get(inp.task_id)
        if queue is not None:
            await queue.enqueue_event(
                _status_event(inp.task_id, inp.context_id, TaskState.TASK_STATE_WORKING)
            )

    @activity.defn(name="ref_llm_call")
    async def ref_llm_call(self, inp: ReferenceInput) -> None:
        queue = LIVE.get(inp.task_id)
        task = TaskInput(
            task_id=inp.task_id,
            context_id=inp.context_id,
            text=inp.text,
            metadata=json.loads(inp.metadata_json),
        )
        i = 0
        async for chunk in self.adapter.stream(task):
            activity.heartbeat()
            if queue is not None:
                # The reference's shape: a new artifact per chunk.
                await queue.enqueue_event(
                    _chunk_event(inp.task_id, inp.context_id, f"{inp.task_id}-{i}", chunk, append=False)
                )
            i += 1

    @activity.defn(name="ref_complete")
    async def ref_complete(self, inp: ReferenceInput) -> None:
        queue = LIVE.get(inp.task_id)
        if queue is not None:
            await queue.enqueue_event(
                _status_event(inp.task_id, inp.context_id, TaskState.TASK_STATE_COMPLETED)
            )


class ReferenceExecutor(AgentExecutor):
    def __init__(self, client: Client, queue: str) -> None:
        self.client = client
        self.queue = queue

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = await _submitted(context, event_queue)
        LIVE[task_id] = event_queue
        try:
            await self.client.execute_workflow(
                "BenchReferenceTask",
                ReferenceInput(
                    task_id=task_id,
                    context_id=context_id,
                    text=context.get_user_input(),
                    metadata_json=json.dumps(_metadata(context)),
                ),
                id=f"ref-{task_id}",
                task_queue=self.queue,
            )
        finally:
            LIVE.pop(task_id, None)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        with contextlib.suppress(Exception):
            await self.client.get_workflow_handle(f"ref-{context.task_id}").cancel()


# ---- server ------------------------------------------------------------------


def _card(port: int, name: str) -> AgentCard:
    return AgentCard(
        name=name,
        description=name,
        version="0",
        supported_interfaces=[
            AgentInterface(
                url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC", protocol_version="1.0"
            )
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=name, name=name, description=name, tags=["bench"])],
    )


async def serve(kind: str) -> None:
    port = int(os.environ["PORT"])
    data_dir = Path(os.environ["DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{data_dir.resolve() / 'tasks.db'}", connect_args={"timeout": 30}
    )
    task_store = VersionedDatabaseTaskStore(engine)
    event_stream = DatabaseTaskEventStream(engine)
    await task_store.initialize()
    await event_stream.initialize()
    worker: Worker | None = None
    worker_run: asyncio.Task[None] | None = None
    executor: AgentExecutor
    if kind == "floor_a":
        release = Release()
        release.install()
        executor = NoOpExecutor(release)
    elif kind == "design_c":
        adapter = BenchAdapter()
        await adapter.setup(AdapterConfig(workspace_id="bench", data_dir=data_dir))
        client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
        queue = f"bench-ref-{uuid.uuid4().hex[:8]}"
        acts = ReferenceActivities(adapter)
        worker = Worker(
            client,
            task_queue=queue,
            workflows=[ReferenceTaskWorkflow],
            activities=[acts.ref_receive, acts.ref_llm_call, acts.ref_complete],
            max_concurrent_activities=1000,
            graceful_shutdown_timeout=timedelta(seconds=2),
        )
        worker_run = asyncio.create_task(worker.run())
        executor = ReferenceExecutor(client, queue)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")
    card = _card(port, kind)
    handler = DefaultRequestHandler(
        agent_executor=executor,
        task_store=task_store,
        agent_card=card,
        event_stream=event_stream,
    )

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "kind": kind})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await handler.aclose()

    app = Starlette(
        routes=[
            Route("/readyz", healthz, methods=["GET"]),
            *create_agent_card_routes(card),
            *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
        ],
        lifespan=lifespan,
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        if worker is not None and worker_run is not None:
            await worker.shutdown()
            with contextlib.suppress(BaseException):
                await worker_run
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
