"""One attempt of a task turn on the graph: where its checkpointed thread
resumes, what is streamed again from the checkpoint, then the graph's run with
its text, usage and token-limit stop read from the event stream."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from molecule_runtime.adapters.base import NonRetryableError, TaskInput
from molecule_runtime.adapters.genai import set_genai_attributes
from molecule_runtime.adapters.langgraph.content import ModelInputs
from molecule_runtime.adapters.langgraph.messages import _message_text, to_messages, turn_messages
from molecule_runtime.adapters.langgraph.model_events import (
    _add_usage,
    _permanent_failure,
    _reply_cut,
    _stopped_at_limit,
    _stream_text,
)
from molecule_runtime.adapters.langgraph.resume import Continuation, ResumePlan, plan_resume
from molecule_runtime.adapters.outputs import Done

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

log = logging.getLogger(__name__)


@dataclass
class GraphTurn:
    """What an attempt needs of the adapter: its compiled graph and how it runs."""

    agent: Any
    inputs: ModelInputs
    # Whether a retry continues the stored answer (the adapter's continues_partial).
    continues: bool
    # (gen_ai.system, gen_ai.request.model) for the attempt's span.
    genai: tuple[str | None, str | None]
    # The status message of an answer cut at the token limit.
    cut_message: Callable[[], str]
    # Whether the graph's steps are checkpointed (the thread can resume).
    checkpointed: bool

    async def resume(
        self, run_config: dict[str, Any], task: TaskInput
    ) -> tuple[dict[str, Any] | None, ResumePlan, list[BaseMessage] | None]:
        """(graph input, what to stream from the checkpoint, the turn's messages
        when the graph finished in an earlier attempt)."""
        fresh = {"messages": to_messages(task, self.inputs)}
        snapshot = await self.agent.aget_state(run_config) if self.checkpointed else None
        partial = getattr(task, "partial", "") or ""
        if snapshot is None or not snapshot.values:
            # A first attempt; or no checkpoint was written before the earlier
            # one stopped: its text came from the first model call.
            return fresh, plan_resume("", partial, continues=self.continues), None
        turn = turn_messages(snapshot.values.get("messages") or [])
        done = "".join(_message_text(m) for m in turn if m.type == "ai")
        plan = plan_resume(done, partial, continues=self.continues)
        log.info(
            "task %s attempt %d resumes its LangGraph thread at %s (%d characters of answer "
            "in the checkpoint, %d stored)",
            task.task_id,
            task.attempt,
            ", ".join(snapshot.next) or "the end",
            len(done),
            len(partial),
        )
        return None, plan, (turn if not snapshot.next else None)

    async def run(
        self, task: TaskInput, run_config: dict[str, Any], continuation: Continuation
    ) -> AsyncIterator[str | Done]:
        inputs, plan, finished = await self.resume(run_config, task)
        if plan.replay:
            yield plan.replay
        if finished is not None:
            # The graph ran to its end in an earlier attempt: only its text was missing.
            last = next((m for m in reversed(finished) if m.type == "ai"), None)
            if last is not None and _reply_cut(last):
                yield Done(self.cut_message())
            return
        continuation.prefix = plan.prefix
        events = self.agent.astream_events(
            inputs,
            config=run_config,
            version="v2",
            # Each step's checkpoint is stored before the next step starts: a
            # tool call that finished is never run again by a retry.
            **({"durability": "sync"} if self.checkpointed else {}),
        )
        usage = {"input_tokens": 0, "output_tokens": 0}
        # Whether the latest model reply stopped at max_tokens: only the last
        # one is the answer (earlier ones chose tools).
        cut = False
        try:
            async for event in events:
                text = _stream_text(event)
                if text:
                    yield text
                elif event.get("event") == "on_chat_model_end":
                    _add_usage(usage, event, default_model=self.genai[1] or "")
                    cut = _stopped_at_limit(event)
        except Exception as exc:
            permanent = _permanent_failure(exc)
            if permanent is not None:
                raise NonRetryableError(permanent) from exc
            raise
        finally:
            # Closing the event stream cancels the graph run (and the model's
            # HTTP request) when we stop early: on cancellation or an error.
            with contextlib.suppress(Exception):
                await events.aclose()
            system, model_name = self.genai
            set_genai_attributes(
                system=system,
                request_model=model_name,
                input_tokens=usage["input_tokens"] or None,
                output_tokens=usage["output_tokens"] or None,
            )
        if cut:
            # Without this a truncated answer looks like a finished one.
            yield Done(self.cut_message())
