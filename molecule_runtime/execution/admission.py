"""Admission control, the front door of execution: how many tasks run at once in
this process, and how many may wait.

Without it every SendMessage starts its adapter (or workflow) at once, and a
burst of long LLM streams shares one event loop and one task store until all
of them crawl. Here a task needs a *running slot*: past `max_running` it waits
in line, stored as `submitted`; past `max_running + max_queued` admitted tasks
a new request is refused before anything is created or stored, so a client is
never told "accepted" and then failed for the server's own load (DESIGN.md:
slow down under load, never fail a task because the runtime is busy).

It takes two steps because they happen in two places:

1. `Admission.admit()` in the request handler, before the SDK creates or stores
   anything: the request gets a `Ticket` (a place in line, handed to dispatch
   in the request's `Handoff`) or `ServerBusyError`;
2. in dispatch (execution/dispatch.py), once the task exists: `claim()` takes
   the ticket over from the hand-off, `Ticket.try_start()` / `Ticket.start()` take (or wait for)
   a slot, and `Ticket.release()` frees it when the run ends.

Slots are granted first come, first served. Everything runs on the event
loop's thread, so plain counters need no lock.

A follow-up held back until an earlier task of its conversation stops
(server/submission.py, `enqueue` and `interrupt`) counts toward its
principal's limit but takes no place in line until then: one slow
conversation must not fill the line and get other clients refused. Once its
hold ends it joins the line, past the bound if need be (it was accepted).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from enum import Enum

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import resolve_user_scope

from molecule_runtime.observability import metrics
from molecule_runtime.refusals import RETRY_AFTER_SECONDS, RetryLater


class ServerBusyError(RetryLater):
    """Refused by admission control before anything was created: retry later."""

    message = "Server busy"

    def __init__(self, admission: Admission) -> None:
        self.retry_after = admission.retry_after
        self.max_running = admission.max_running
        self.max_queued = admission.max_queued
        super().__init__(
            f"Server busy: {admission.running} of {admission.max_running} running slots and "
            f"{admission.queued} of {admission.max_queued} places in line are taken "
            "(MOLECULE_MAX_RUNNING_TASKS, MOLECULE_MAX_QUEUED_TASKS). Nothing was created; "
            f"send the request again in {admission.retry_after} seconds."
        )

    def metadata(self) -> dict[str, str]:
        return {
            **super().metadata(),
            "maxRunningTasks": str(self.max_running),
            "maxQueuedTasks": str(self.max_queued),
        }


class PrincipalTasksError(RetryLater):
    """The caller already has its share of tasks admitted in this process."""

    http_status = 429
    status = "RESOURCE_EXHAUSTED"
    reason = "PRINCIPAL_TASK_LIMIT"

    def __init__(self, admission: Admission) -> None:
        self.retry_after = admission.retry_after
        self.max_per_principal = admission.max_per_principal
        super().__init__(
            f"Too many tasks: you have {admission.max_per_principal} tasks running or waiting "
            "(MOLECULE_PRINCIPAL_MAX_TASKS). Nothing was created; send the request again "
            f"in {admission.retry_after} seconds."
        )

    def metadata(self) -> dict[str, str]:
        return {**super().metadata(), "maxTasksPerPrincipal": str(self.max_per_principal)}


class _State(Enum):
    ADMITTED = "admitted"  # the handler holds it; the task does not exist yet
    CLAIMED = "claimed"  # dispatch holds it: the task exists and waits for a slot
    RUNNING = "running"  # it holds a running slot
    RELEASED = "released"


class Ticket:
    """One admitted request: a place in line, then a running slot."""

    def __init__(self, admission: Admission, owner: str) -> None:
        self._admission = admission
        self._state = _State.ADMITTED
        self.owner = owner  # the principal's owner scope (per-principal limit)
        self._hold: asyncio.Future[None] | None = None
        self._outside_line = False  # held: not counted in the line yet

    def hold_until(self, ready: asyncio.Future[None]) -> None:
        """The task may take a slot only once `ready` is done: it waits for an
        earlier task of its conversation (server/submission.py, `enqueue`).
        Until then it takes no place in line."""
        self._hold = ready
        if ready.done() or self._state is _State.RELEASED or self._outside_line:
            return
        self._outside_line = True
        self._admission._leave_line()
        ready.add_done_callback(lambda _: self._admission._rejoin_line(self))

    def try_start(self) -> bool:
        """Take a free slot now; False when the task has to wait for one."""
        if self._state is _State.RUNNING:
            return True
        if self._hold is not None and not self._hold.done():
            return False
        return self._admission._take_slot(self)

    async def start(self) -> None:
        """Wait for a running slot (in arrival order)."""
        if self._hold is not None and not self._hold.done():
            try:
                await self._hold
            except asyncio.CancelledError:
                self._hold.cancel()
                raise
        if self.try_start():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self, waiter)
        self._admission._waiting.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            # CancelTask (or shutdown) while waiting. If the slot was granted in
            # the same instant the ticket is running and release() frees it.
            if entry in self._admission._waiting:
                self._admission._waiting.remove(entry)
            raise

    def release(self) -> None:
        """Give back the slot or the place in line; safe to call more than once."""
        self._admission._release(self)

    def release_unclaimed(self) -> None:
        """The request ended before dispatch took the ticket over: give it back.

        A task that started running keeps its ticket until its run ends, also
        after the client went away.
        """
        if self._state is _State.ADMITTED:
            self._admission._release(self)


class Admission:
    """Running slots and a bounded line for the tasks of this process."""

    def __init__(
        self,
        max_running: int,
        max_queued: int,
        *,
        retry_after: int = RETRY_AFTER_SECONDS,
        max_per_principal: int = 0,
    ) -> None:
        # max_running 0: no limit (and so no line).
        self.max_running = max_running
        self.max_queued = max_queued
        self.retry_after = retry_after
        # Tickets one principal may hold at once (0: no limit), so that one
        # client cannot take every slot and place in line from the others.
        self.max_per_principal = max_per_principal
        self._by_owner: Counter[str] = Counter()
        self._admitted = 0  # tickets not released: running or waiting
        self._running = 0
        self._waiting: deque[tuple[Ticket, asyncio.Future[None]]] = deque()
        self._publish()

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        """Admitted but not running: waiting for a slot (or about to be created)."""
        return self._admitted - self._running

    def admit(
        self, context: ServerCallContext, hold: asyncio.Future[None] | None = None
    ) -> Ticket:
        """A place for the request of `context`, or ServerBusyError when the line is full.

        With `hold` (a follow-up waiting for its conversation) only the
        principal's limit applies now; it joins the line when `hold` is done.
        """
        owner = resolve_user_scope(context)
        if self.max_per_principal and self._by_owner[owner] >= self.max_per_principal:
            metrics.PRINCIPAL_REFUSED.labels(PrincipalTasksError.reason).inc()
            raise PrincipalTasksError(self)
        held = hold is not None and not hold.done()
        if not held and self.max_running and self._admitted >= self.max_running + self.max_queued:
            metrics.ADMISSION_REFUSED.inc()
            raise ServerBusyError(self)
        ticket = self._enter(owner)
        if hold is not None:
            ticket.hold_until(hold)
        return ticket

    def _leave_line(self) -> None:
        self._admitted -= 1
        self._publish()

    def _rejoin_line(self, ticket: Ticket) -> None:
        if not ticket._outside_line:
            return
        ticket._outside_line = False
        self._admitted += 1
        self._publish()

    def _enter(self, owner: str) -> Ticket:
        self._admitted += 1
        self._by_owner[owner] += 1
        self._publish()
        return Ticket(self, owner)

    def _take_slot(self, ticket: Ticket) -> bool:
        # Only when nobody waits: a newcomer must not overtake the line.
        if self.max_running and (self._running >= self.max_running or self._waiting):
            return False
        self._grant(ticket)
        return True

    def _grant(self, ticket: Ticket) -> None:
        ticket._state = _State.RUNNING
        self._running += 1
        self._publish()

    def _release(self, ticket: Ticket) -> None:
        if ticket._state is _State.RELEASED:
            return
        if ticket._state is _State.RUNNING:
            self._running -= 1
        ticket._state = _State.RELEASED
        if ticket._outside_line:
            ticket._outside_line = False
        else:
            self._admitted -= 1
        self._by_owner[ticket.owner] -= 1
        if self._by_owner[ticket.owner] <= 0:
            del self._by_owner[ticket.owner]
        while self._waiting and (not self.max_running or self._running < self.max_running):
            waiting, waiter = self._waiting.popleft()
            if waiter.done():
                continue  # cancelled; its ticket is released by its own run
            self._grant(waiting)
            waiter.set_result(None)
        self._publish()

    def _publish(self) -> None:
        metrics.ADMISSION_RUNNING.set(self._running)
        metrics.ADMISSION_QUEUED.set(self.queued)


def claim(ticket: Ticket | None) -> Ticket | None:
    """Dispatch takes over the ticket its request was admitted with (the hand-off's).

    None when the request was not admitted (no admission control). A ticket the
    handler already gave back (its client left before the task ran, e.g. while
    an earlier message of the same task still ran) is replaced by a new one,
    past the bound: the message was accepted, so it is never refused now.
    """
    if ticket is None:
        return None
    if ticket._state is _State.RELEASED:
        hold = ticket._hold
        ticket = ticket._admission._enter(ticket.owner)
        if hold is not None:
            ticket.hold_until(hold)
    if ticket._state is _State.ADMITTED:
        ticket._state = _State.CLAIMED
    return ticket
