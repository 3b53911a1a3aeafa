"""Push notifications: task state changes POSTed to the webhooks clients registered.

Delivery reuses the SDK's `BasePushNotificationSender` (JSON `StreamResponse`
body, `X-A2A-Notification-Token` and `Authorization` headers) and adds what a
production sender needs: it never makes the task wait, delivers each task's
notifications in order, retries failed webhooks with back-off a bounded number
of times, and re-checks the webhook address before every POST.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import httpx
from a2a.server.tasks import (
    BasePushNotificationSender,
    PushNotificationConfigStore,
    PushNotificationEvent,
)
from a2a.types.a2a_pb2 import Task, TaskPushNotificationConfig, TaskStatusUpdateEvent
from a2a.utils.push_url_validator import validate_push_notification_url

from molecule_runtime.states import TERMINAL_STATES

log = logging.getLogger(__name__)

UrlValidator = Callable[[str], Awaitable[bool]]

# Tasks whose last pushed status is remembered (to skip writes that did not change it).
_REMEMBERED_TASKS = 10_000


async def _http_url(url: str) -> bool:
    """Only the shape: http(s) with a host (MOLECULE_PUSH_ALLOW_PRIVATE=true)."""
    try:
        parsed = urllib.parse.urlparse(url)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def url_validator(allow_private: bool) -> UrlValidator:
    """The webhook URL policy.

    By default the SDK's check: http(s) only, and every address the host
    resolves to must be public (no loopback, private, link-local, shared,
    reserved or multicast), so a client cannot make the agent POST into its
    own network (e.g. a cloud metadata endpoint).
    """
    return _http_url if allow_private else validate_push_notification_url


class PushNotifier(BasePushNotificationSender):
    """Queues notifications and delivers them in the background, one worker per task."""

    def __init__(
        self,
        config_store: PushNotificationConfigStore,
        *,
        allow_private: bool = False,
        max_attempts: int = 5,
        retry_initial_interval: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        # Redirects are not followed: a public URL must not bounce the POST to
        # an address the validator would refuse.
        client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        # The URL is checked here, once per delivery, not by the base class
        # on every retry of it.
        super().__init__(client, config_store)
        self.validate_url = url_validator(allow_private)
        self.max_attempts = max_attempts
        self.retry_initial_interval = retry_initial_interval
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
                event = queue.pop(0)
                # Reads the task's configs (from the shared store) and POSTs to each.
                await super().send_notification(task_id, event)
        finally:
            self._queues.pop(task_id, None)

    async def _dispatch_notification(
        self, event: PushNotificationEvent, push_info: TaskPushNotificationConfig, task_id: str
    ) -> bool:
        try:
            accepted = await self.validate_url(push_info.url)
        except Exception:
            accepted = False
        if not accepted:
            log.warning("push notification for task %s not sent: URL refused: %s", task_id, push_info.url)
            return False
        delay = self.retry_initial_interval
        for attempt in range(1, self.max_attempts + 1):
            if await super()._dispatch_notification(event, push_info, task_id):
                return True
            if attempt < self.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "push notification for task %s to %s failed %d times; dropped",
            task_id,
            push_info.url,
            self.max_attempts,
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
