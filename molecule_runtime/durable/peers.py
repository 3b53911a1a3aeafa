"""Whether another process may run this process's workflows' local activities.

The stage that stores a task's question (`task_complete`, a local activity)
runs in whichever process holds the workflow. A process that is the only
poller of the shared workflow queue asks every question itself, so its
streams need not read the task store to catch a question asked elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

log = logging.getLogger(__name__)

# Pollers are what Temporal saw lately; a replica that comes up is noticed
# within this (plus its first poll), a question it asks then reaches the
# client with that delay once.
REFRESH_S = 5.0


class WorkflowPeers:
    def __init__(
        self, client: Callable[[], Client | None], namespace: str, queue: str, identity: str
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._queue = queue
        self._identity = identity
        self._others = True
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    async def others_poll(self) -> bool:
        """True unless Temporal says every poller of the shared workflow queue is this
        process (also True when that cannot be asked: the safe answer)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._checked_at is None or loop.time() - self._checked_at >= REFRESH_S:
                self._others = await self._ask()
                self._checked_at = loop.time()
            return self._others

    async def _ask(self) -> bool:
        client = self._client()
        if client is None:
            return True
        try:
            reply = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self._namespace,
                    task_queue=TaskQueue(name=self._queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
        except Exception as exc:
            log.debug("could not list the pollers of %s: %s", self._queue, exc)
            return True
        return any(p.identity != self._identity for p in reply.pollers)
