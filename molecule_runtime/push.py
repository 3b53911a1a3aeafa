"""Push notifications: task state changes POSTed to the webhooks clients registered.

Delivery sends what the SDK's `BasePushNotificationSender` sends (JSON
`StreamResponse` body, `X-A2A-Notification-Token` and `Authorization` headers)
and adds what a production sender needs: it never makes the task wait, delivers
each task's notifications in order, POSTs to at most `max_concurrent` of one
task's webhooks at once, retries failed webhooks with back-off a bounded number
of times, and connects only to an address that passed the URL policy, resolved
once per attempt (push_policy.py). Log lines name the task and the config id,
never a webhook URL or token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections import OrderedDict

import httpx
from a2a.server.tasks import (
    PushNotificationConfigStore,
    PushNotificationEvent,
    PushNotificationSender,
)
from a2a.types.a2a_pb2 import Task, TaskPushNotificationConfig, TaskStatusUpdateEvent
from a2a.utils.proto_utils import to_stream_response
from google.protobuf.json_format import MessageToDict

from molecule_runtime.push_policy import Resolver, WebhookPolicy, system_resolver
from molecule_runtime.states import TERMINAL_STATES
from molecule_runtime.store.health import until_stored

log = logging.getLogger(__name__)

# Tasks whose last pushed status is remembered (to skip writes that did not change it).
_REMEMBERED_TASKS = 10_000


class PushNotifier(PushNotificationSender):
    """Queues notifications and delivers them in the background, one worker per task."""

    def __init__(
        self,
        config_store: PushNotificationConfigStore,
        *,
        allow_private: bool = False,
        max_attempts: int = 5,
        retry_initial_interval: float = 1.0,
        timeout: float = 10.0,
        max_concurrent: int = 4,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        # Redirects are not followed: a public URL must not bounce the POST to
        # an address the policy would refuse. No kept-alive connections: POSTs go
        # to an address, so the pool would hand a TLS connection checked for one
        # name to another name on the same address.
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            verify=verify,
        )
        self._config_store = config_store
        self.policy = WebhookPolicy(allow_private=allow_private, resolver=resolver)
        self.validate_url = self.policy.validate
        self.max_attempts = max_attempts
        self.retry_initial_interval = retry_initial_interval
        self.max_concurrent = max_concurrent
        self._queues: dict[str, list[PushNotificationEvent]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._last_status: OrderedDict[str, bytes] = OrderedDict()

    def notify(self, task_id: str, event: object, _version: object = None) -> None:
        """Called for every event written to the task store; never blocks."""
        if not isinstance(event, Task | TaskStatusUpdateEvent):
            return  # artifact chunks are not state changes
        status = event.status.SerializeToString(deterministic=True)
        if self._last_status.get(task_id) == status:
            return  # e.g. a history-only write of the task
        self._last_status[task_id] = status
        self._last_status.move_to_end(task_id)
        if event.status.state in TERMINAL_STATES:
            del self._last_status[task_id]
        while len(self._last_status) > _REMEMBERED_TASKS:
            self._last_status.popitem(last=False)
        copy = type(event)()
        # The writer keeps mutating its task object after the write.
        copy.CopyFrom(event)
        queue = self._queues.get(task_id)
        if queue is not None:
            queue.append(copy)
            return
        self._queues[task_id] = [copy]
        worker = asyncio.get_running_loop().create_task(
            self._deliver_all(task_id), name=f"push:{task_id}"
        )
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def send_notification(self, task_id: str, event: PushNotificationEvent) -> None:
        self.notify(task_id, event)

    async def _deliver_all(self, task_id: str) -> None:
        queue = self._queues[task_id]
        try:
            while queue:
                await self._fan_out(task_id, queue.pop(0))
        finally:
            self._queues.pop(task_id, None)

    async def _fan_out(self, task_id: str, event: PushNotificationEvent) -> None:
        """POST one event to each of the task's webhooks (read from the shared store)."""
        try:
            # A store that is away for now is waited for: the event is sent late, not dropped.
            configs = await until_stored(
                functools.partial(self._config_store.get_info_for_dispatch, task_id), None
            )
        except Exception as exc:
            log.warning("task %s: push configs not readable (%s); not sent", task_id, type(exc).__name__)
            return
        if not configs:
            return
        body = MessageToDict(to_stream_response(event))
        gate = asyncio.Semaphore(self.max_concurrent)

        async def one(config: TaskPushNotificationConfig) -> None:
            async with gate:
                await self._deliver(task_id, config, body)

        await asyncio.gather(*(one(config) for config in configs))

    async def _deliver(self, task_id: str, config: TaskPushNotificationConfig, body: dict) -> bool:
        headers: dict[str, str] = {}
        if config.token:
            headers["X-A2A-Notification-Token"] = config.token
        auth = config.authentication
        if config.HasField("authentication") and auth.scheme and auth.credentials:
            headers["Authorization"] = f"{auth.scheme} {auth.credentials}"
        delay = self.retry_initial_interval
        problem = "no attempt"
        for attempt in range(1, self.max_attempts + 1):
            target = await self.policy.target(config.url)
            if target is None:
                log.warning(
                    "task %s: push config %s not sent: webhook address refused", task_id, config.id
                )
                return False
            try:
                response = await self._client.post(
                    target.url,
                    json=body,
                    headers={**headers, **target.headers},
                    extensions=target.extensions,
                )
                if response.is_success:
                    return True
                problem = f"status {response.status_code}"
            except httpx.HTTPError as exc:
                # The exception's text carries the URL: only its kind is logged.
                problem = type(exc).__name__
            if attempt < self.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "task %s: push config %s failed %d times (last: %s); dropped",
            task_id,
            config.id,
            self.max_attempts,
            problem,
        )
        return False

    async def aclose(self, grace: float = 2.0) -> None:
        """Give pending deliveries a moment, then stop them and close the client."""
        if self._workers:
            await asyncio.wait(list(self._workers), timeout=grace)
        for worker in list(self._workers):
            worker.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        await self._client.aclose()
