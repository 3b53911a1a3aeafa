"""Durable mode for one process: Temporal connection, co-located workers, task submission.

Mode is decided per task *before* anything runs: if Temporal is not reachable
the task runs directly; once a workflow is accepted the task is never also run
directly. A supervisor reconnects with back-off and switches new tasks back to
durable mode when Temporal returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    RPCError,
    RPCTimeoutOrCancelledError,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCStatusCode
from temporalio.worker import Worker

from molecule_runtime import metrics
from molecule_runtime.adapters.base import BaseAdapter, TaskInput
from molecule_runtime.config import Settings
from molecule_runtime.durable.activities import TaskActivities
from molecule_runtime.durable.connect import connect
from molecule_runtime.durable.embedded import EmbeddedTemporal
from molecule_runtime.durable.registry import LiveTask, LiveTaskRegistry
from molecule_runtime.durable.types import (
    LOST_CONTACT_KEY,
    PROVIDE_INPUT_SIGNAL,
    WORKFLOW_NAME,
    InputReply,
    TaskOutcome,
    WorkflowInput,
    workflow_id,
)
from molecule_runtime.durable.workflow import AgentTaskWorkflow, root_message
from molecule_runtime.execution.events import STATE_NAMES, TaskEvents
from molecule_runtime.store import Stores
from molecule_runtime.telemetry import inject_trace_context

log = logging.getLogger(__name__)

# Transport failures that mean "the request did not reach Temporal".
_UNREACHABLE = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}
# Failures worth retrying a start for; temporalio reports its own RPC timeout
# as CANCELLED ("Timeout expired").
_TRANSIENT = _UNREACHABLE | {RPCStatusCode.CANCELLED, RPCStatusCode.RESOURCE_EXHAUSTED}
# A start gets this long per try, and this long in all, under heavy load.
START_RPC_TIMEOUT = 10.0
START_DEADLINE = 60.0
# A burst of eager starts whose first workflow tasks all run on this process's
# 2 cores would time out in Temporal and be retried, adding load; past this
# many at once, starts wait here instead.
MAX_CONCURRENT_STARTS = 32
START_GATE_HOLD = 10.0


class DurableBackend:
    def __init__(
        self,
        settings: Settings,
        adapter: BaseAdapter,
        stores: Stores,
        *,
        accept_tasks: bool = True,
    ) -> None:
        self.settings = settings
        self.adapter = adapter
        self.stores = stores
        self.accept_tasks = accept_tasks
        self.registry = LiveTaskRegistry()
        self._client: Client | None = None
        self._workers: list[Worker] = []
        self._worker_runs: list[asyncio.Task[None]] = []
        self._embedded: EmbeddedTemporal | None = None
        self._target = settings.temporal_host or ""
        self._healthy = False
        self._started = False
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._last_error = ""
        self.fallbacks = 0
        self._start_gate = asyncio.Semaphore(MAX_CONCURRENT_STARTS)

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        if self.settings.temporal_host == "embedded":
            self._embedded = EmbeddedTemporal(
                self.settings.data_dir.resolve() / "temporal", self.settings.temporal_namespace
            )
            self._target = await self._embedded.start()
        try:
            await self._connect()
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "Temporal at %s is unreachable (%s): tasks run directly until it is back",
                self._target,
                self._last_error,
            )
        self._started = True
        self._supervisor = asyncio.create_task(self._supervise(), name="temporal-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._stop_workers()
        if self._embedded is not None:
            await self._embedded.stop()

    async def _connect(self) -> None:
        client = await asyncio.wait_for(
            connect(self.settings, self._target, interceptors=[TracingInterceptor()]),
            timeout=self.settings.temporal_connect_timeout,
        )
        self._client = client
        self._start_workers(client)
        self._set_healthy(True)
        self._last_error = ""
        log.info(
            "durable mode: Temporal %s namespace=%s queues=%s",
            self._target,
            self.settings.temporal_namespace,
            ", ".join(w.task_queue for w in self._workers),
        )

    def _start_workers(self, client: Client) -> None:
        s = self.settings
        activities = TaskActivities(
            self.adapter,
            self.stores.tasks,
            self.registry,
            heartbeat_interval=min(1.0, s.temporal_heartbeat_timeout / 3),
            workspace_id=s.workspace_id,
            batch_window=s.stream_batch_window,
        )
        common: dict[str, Any] = {
            # Heartbeat replies carry cancel requests: keep them frequent so
            # CancelTask reaches the adapter within about a second.
            "max_heartbeat_throttle_interval": timedelta(seconds=0.5),
            "default_heartbeat_throttle_interval": timedelta(seconds=0.5),
            "graceful_shutdown_timeout": timedelta(seconds=s.shutdown_grace),
            "max_concurrent_activities": s.temporal_max_concurrent_activities,
            "identity": f"molecule-runtime@{s.resolved_instance_id}",
        }
        self._workers = [
            Worker(
                client,
                task_queue=s.temporal_task_queue,
                workflows=[AgentTaskWorkflow],
                activities=[activities.task_receive, activities.llm_call, activities.task_complete],
                # A dead worker's sticky queue would otherwise hold its
                # workflows for 10 s before another worker may take them.
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
                max_concurrent_local_activities=s.temporal_max_concurrent_activities,
                **common,
            )
        ]
        if self.accept_tasks:
            self._workers.append(
                Worker(
                    client,
                    task_queue=s.process_task_queue,
                    activities=[activities.llm_call],
                    **common,
                )
            )
        self._worker_runs = [
            asyncio.create_task(w.run(), name=f"temporal-worker:{w.task_queue}")
            for w in self._workers
        ]

    async def _stop_workers(self) -> None:
        workers, runs = self._workers, self._worker_runs
        self._workers, self._worker_runs = [], []
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        for run in runs:
            if not run.done():
                run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    async def _healthy_now(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(
                await self._client.service_client.check_health(timeout=timedelta(seconds=2))
            )
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            return False

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping:
            await asyncio.sleep(1.0 if self._healthy else backoff)
            if self._client is None:
                try:
                    await self._connect()
                    backoff = 1.0
                    log.info("Temporal is reachable again: new tasks run durably")
                except Exception as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    backoff = min(backoff * 2, self.settings.temporal_reconnect_max_interval)
                continue
            ok = await self._healthy_now()
            if ok and not self._healthy:
                log.info("Temporal is reachable again: new tasks run durably")
                backoff = 1.0
            elif not ok and self._healthy:
                log.warning("lost Temporal (%s): new tasks run directly until it is back", self._last_error)
            self._set_healthy(ok)
            if not ok:
                backoff = min(backoff * 2, self.settings.temporal_reconnect_max_interval)
            if ok and any(run.done() for run in self._worker_runs):
                for run in self._worker_runs:
                    if run.done() and not run.cancelled() and run.exception():
                        log.warning("Temporal worker stopped: %s; restarting it", run.exception())
                await self._stop_workers()
                self._start_workers(self._client)

    # ---- status ----------------------------------------------------------

    def _set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy
        metrics.TEMPORAL_CONNECTED.set(1 if healthy else 0)

    def accepting(self) -> bool:
        return self.accept_tasks and self._healthy and self._client is not None

    @property
    def mode(self) -> str:
        return "durable" if self._healthy else "direct-fallback"

    def ready(self) -> bool:
        # Ready when the worker runs, or when the fallback to direct is active.
        return self._started

    def status(self) -> dict[str, Any]:
        return {
            "target": self._target,
            "namespace": self.settings.temporal_namespace,
            "embedded": self._embedded is not None,
            "connected": self._healthy,
            "workers": [w.task_queue for w in self._workers],
            "live_tasks": len(self.registry),
            "fallbacks": self.fallbacks,
            "last_error": self._last_error,
        }

    # ---- tasks -----------------------------------------------------------

    def _workflow_input(self, task: TaskInput) -> WorkflowInput:
        s = self.settings
        return WorkflowInput(
            task=task,
            workspace_id=s.workspace_id,
            process_queue=s.process_task_queue,
            shared_queue=s.temporal_task_queue,
            heartbeat_timeout=s.temporal_heartbeat_timeout,
            activity_timeout=s.temporal_activity_timeout,
            schedule_to_start_timeout=s.temporal_schedule_to_start_timeout,
            max_attempts=s.temporal_max_attempts,
            retry_initial_interval=s.temporal_retry_initial_interval,
            trace_carrier=inject_trace_context(),
            input_timeout=s.input_timeout,
        )

    async def run(self, task: TaskInput, events: TaskEvents) -> bool:
        client = self._client
        if client is None:
            self.fallbacks += 1
            return False
        wf_id = workflow_id(self.settings.workspace_id, task.task_id)
        with self.registry.register(events) as entry:
            async with self._start_gate:
                handle = await self._start(client, wf_id, task)
                if handle is not None and not isinstance(handle, str):
                    # Hold the gate until the workflow's first task has run here.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(events.working.wait(), START_GATE_HOLD)
            if handle is None:
                self.fallbacks += 1
                return False
            if isinstance(handle, str):
                await events.status(STATE_NAMES["failed"], handle)
                return True
            entry.handle = handle
            await self._follow(handle, events)
            return True

    async def _start(
        self, client: Client, wf_id: str, task: TaskInput
    ) -> WorkflowHandle | str | None:
        """Start (or join) the task's workflow.

        None: Temporal refused the connection before anything was sent, so the
        task may run directly. A string: Temporal never confirmed the start;
        the task must not run directly (the start may have been accepted),
        so it fails with that message. Retrying is safe: the workflow id is
        the task's and USE_EXISTING joins a run that did start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_DEADLINE
        delay = 0.2
        ambiguous = False
        while True:
            try:
                return await client.start_workflow(
                    WORKFLOW_NAME,
                    self._workflow_input(task),
                    id=wf_id,
                    task_queue=self.settings.temporal_task_queue,
                    result_type=TaskOutcome,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    request_eager_start=True,
                    rpc_timeout=timedelta(
                        seconds=max(START_RPC_TIMEOUT, self.settings.temporal_connect_timeout)
                    ),
                )
            except WorkflowAlreadyStartedError:
                # The same task was submitted before and has finished: its
                # result stands, it is not run again.
                return client.get_workflow_handle(wf_id, result_type=TaskOutcome)
            except (RPCError, RPCTimeoutOrCancelledError) as exc:
                status = getattr(exc, "status", None)
                if isinstance(exc, RPCError) and status not in _TRANSIENT:
                    raise
                self._last_error = f"start_workflow: {exc}"
                if status == RPCStatusCode.UNAVAILABLE and not ambiguous:
                    self._set_healthy(False)
                    return None
                ambiguous = True
                if loop.time() > deadline:
                    return (
                        "Temporal did not confirm the start of this task in time "
                        f"({exc}); it was not run. Send it again."
                    )
                log.warning("start_workflow for %s: %s; retrying", wf_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def ensure_started(self, task: TaskInput) -> bool:
        """Start the workflow of a stored task unless one exists; True if started now."""
        client = self._client
        if client is None:
            return False
        wf_id = workflow_id(self.settings.workspace_id, task.task_id)
        try:
            await client.get_workflow_handle(wf_id).describe()
            return False
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        await client.start_workflow(
            WORKFLOW_NAME,
            self._workflow_input(task),
            id=wf_id,
            task_queue=self.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        return True

    async def resume(self, task: TaskInput, events: TaskEvents) -> bool:
        """Hand the user's answer to a task waiting for input; follow the new turn here.

        False if Temporal cannot be reached (nothing was sent).
        """
        client = self._client
        if client is None or not self._healthy:
            return False
        wf_id = workflow_id(self.settings.workspace_id, task.task_id)
        handle = client.get_workflow_handle(wf_id, result_type=TaskOutcome)
        reply = InputReply(
            task=task, process_queue=self.settings.process_task_queue, artifact_id=events.artifact_id
        )
        with self.registry.register(events) as entry:
            entry.handle = handle
            try:
                await handle.signal(
                    PROVIDE_INPUT_SIGNAL,
                    reply,
                    rpc_timeout=timedelta(seconds=self.settings.temporal_connect_timeout),
                )
            except RPCError as exc:
                if exc.status in _UNREACHABLE:
                    self._set_healthy(False)
                    return False
                # The workflow is gone (finished, timed out waiting): the task cannot go on.
                await events.status(
                    STATE_NAMES["failed"], f"This task no longer accepts answers ({exc.message})."
                )
                return True
            except RPCTimeoutOrCancelledError:
                return False
            await self._follow(handle, events)
            return True

    async def _follow(self, handle: WorkflowHandle, events: TaskEvents) -> None:
        """Stream until the workflow ends or stops to wait for the user's input."""
        result = asyncio.ensure_future(self._result(handle))
        paused = asyncio.ensure_future(events.input_required.wait())
        try:
            await asyncio.wait({result, paused}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._cancel_quietly(handle)
            raise
        finally:
            for future in (result, paused):
                if not future.done():
                    future.cancel()
        if not result.done() or result.cancelled():
            return  # waiting for input: the workflow goes on without this request
        outcome = result.result()
        if events.terminal_state is None and not events.input_required.is_set():
            # task_complete ran on another worker, or Temporal is out of
            # reach; the client's stream still ends with a final state.
            await events.status(
                STATE_NAMES.get(outcome.state, STATE_NAMES["failed"]),
                outcome.message or None,
                metadata={LOST_CONTACT_KEY: True} if outcome.state == "lost" else None,
            )

    async def _result(self, handle: WorkflowHandle) -> TaskOutcome:
        loop = asyncio.get_running_loop()
        s = self.settings
        deadline = loop.time() + s.temporal_activity_timeout * s.temporal_max_attempts + 60
        delay = 0.5
        while True:
            try:
                return await handle.result()
            except WorkflowFailureError as exc:
                if isinstance(exc.cause, CancelledError):
                    return TaskOutcome("canceled", "Canceled.")
                return TaskOutcome("failed", root_message(exc))
            except (RPCError, RPCTimeoutOrCancelledError) as exc:
                if loop.time() > deadline:
                    # Reported as failed; task_complete overwrites it with the
                    # real outcome if the workflow finishes after all.
                    return TaskOutcome(
                        "lost",
                        f"Lost contact with Temporal while the task ran ({exc}); "
                        "it may still finish there: GetTask shows the final state.",
                    )
                log.warning("waiting for workflow %s: %s; retrying", handle.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _cancel_quietly(self, handle: WorkflowHandle) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(handle.cancel()), timeout=2)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task's workflow and wait (bounded) until the adapter has stopped."""
        entry: LiveTask | None = self.registry.get(task_id)
        client = self._client
        if entry is not None and entry.handle is not None:
            await self._cancel_quietly(entry.handle)
            # The adapter sees CancelledError at its next heartbeat reply.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.finished.wait(), timeout=10)
            return True
        if client is None:
            return False
        handle = client.get_workflow_handle(workflow_id(self.settings.workspace_id, task_id))
        try:
            await handle.cancel()
        except Exception:
            return False
        return True
