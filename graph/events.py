"""The one adapter from LangGraph's stream to ``AgentEvent``s; every consumer reads these.

    async for event in stream(graph, {"messages": [("user", "17*23?")]}, config):
        print(event.type, event.to_dict())

Built on ``graph.astream(stream_mode=["custom", "updates"])`` and the model's tokens:

- the ``llm`` node hands each chunk as the model makes it -> ``content``: straight to the
  events when only they are asked for (``agent_ng.nodes.tokens``), else through LangGraph's
  ``messages`` mode (from the ``llm`` node only; tool results travel in that mode too and are
  not content);
- ``custom`` carries the records the tool-call wrapper and ``progress.report`` write
  (``agent_ng.contract``) -> ``tool_start``, ``tool_progress``, ``tool_result``,
  ``tool_complete``, ``tool_error``; when only events are asked for, they take the tokens'
  way instead (``agent_ng.engine.tool_calls.RECORDS``);
- ``updates`` gives each finished model turn -> ``tool_call`` (arguments complete) and usage,
  and LangGraph's ``__interrupt__`` -> ``interrupt``.

Every tool call yields ``tool_call``, then (once it runs) ``tool_start`` and any
``tool_progress``, then ``tool_result`` and one of ``tool_complete`` / ``tool_error``. The event
types and their fields are ``agent_ng.contract``'s (``AgentEvent`` lives there).

``run_events`` is the same run for a caller that also wants LangGraph's own stream modes (the
LangGraph Server API): it yields those chunks as ``Part``s, as LangGraph made them, among the
same ``AgentEvent``s.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Collection
from contextlib import aclosing
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import anyio
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import Command

from agent_ng.contract import AgentEvent, EventType, RunStatus, read_record
from agent_ng.engine.tool_calls import RECORDS, SHOWN_RESULTS, preview
from agent_ng.graph.settle import SUPERSEDED, settle
from agent_ng.models.chat import ModelTimeoutError
from agent_ng.nodes import LLM
from agent_ng.nodes.llm import STEP_LIMIT_REASON
from agent_ng.nodes.tokens import TOKEN_TAP, TokenTap
from agent_ng.persistence.fencing import FencedError
from agent_ng.persistence.thread_lock import hold_thread

STREAM_MODES = ["custom", "updates"]
"""The modes the events are made from, with the tokens (``TOKENS``)."""
TOKENS = "messages"
"""The mode the tokens come in: LangGraph's, or the tap's in its shape."""
RUN_ATTEMPT = "run_attempt"
"""The config metadata key of a run's attempt."""
PART_MODES = frozenset(
    {"values", "updates", "messages", "custom", "debug", "checkpoints", "tasks", "events"}
)
"""What ``run_events`` can yield as ``Part``s: LangGraph's stream modes, and ``events``
(``astream_events``)."""
EVENTS = "events"

INTERRUPTS = "__interrupt__"
"""LangGraph's key for the interrupts in an ``updates`` chunk (its own constant is private)."""


@dataclass(frozen=True, slots=True)
class Part:
    """A chunk of a LangGraph stream mode the caller asked ``run_events`` for, as LangGraph made it.

    ``namespace`` is the subgraph it comes from (``()`` for the graph itself; only with
    ``subgraphs=True``). In mode ``events`` the chunk is one ``astream_events(version="v2")``
    event of a run inside the graph.
    """

    mode: str
    chunk: Any
    namespace: tuple[str, ...] = ()


@dataclass(slots=True)
class _Run:
    """One run's identity, clock and tallies while its stream is translated."""

    run_id: str
    thread_id: str | None
    started: float = field(default_factory=perf_counter)
    status: RunStatus = "done"
    usage: dict[str, int] = field(
        default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    )
    shown: list[str] = field(default_factory=list)
    """The text of the model answer being streamed, until its node stores the answer."""
    shown_id: str | None = None

    def partial_answer(self, reason: str = "cancelled") -> AIMessage | None:
        """What the consumer saw of an answer the model did not finish, as a message."""
        if self.shown_id is None:
            return None
        return AIMessage(
            "".join(self.shown), id=self.shown_id, response_metadata={"finish_reason": reason}
        )

    def event(self, type: EventType, **fields: Any) -> AgentEvent:
        """An event of this run, stamped with the time since it started."""
        return AgentEvent(type, self.run_id, self.thread_id, perf_counter() - self.started, **fields)

    def translate(self, mode: str, chunk: Any) -> list[AgentEvent]:
        """The events one chunk of ``graph.astream`` makes (often none)."""
        if mode == TOKENS:
            return self._from_message(*chunk)
        if mode == "custom":
            return self._from_custom(chunk)
        if mode == "updates":
            return self._from_updates(chunk)
        return []

    def _from_message(self, message: BaseMessage, metadata: dict[str, Any]) -> list[AgentEvent]:
        node = metadata.get("langgraph_node")
        if node != LLM or not isinstance(message, AIMessage):
            return []
        text = message.content if type(message.content) is str else message.text
        if not text:
            return []
        self.shown.append(text)
        if self.shown_id is None:
            self.shown_id = message.id
        t = perf_counter() - self.started
        return [AgentEvent(EventType.CONTENT, self.run_id, self.thread_id, t, text=text, node=LLM)]

    def _from_custom(self, chunk: Any) -> list[AgentEvent]:
        if (record := read_record(chunk)) is None:
            return []
        event_type, fields = record
        return [self.event(event_type, **fields)]

    def _from_updates(self, chunk: dict[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        for node, update in chunk.items():
            if node == INTERRUPTS:
                self.status = "interrupted"
                events += [self.event(EventType.INTERRUPT, value=i.value, interrupt_id=i.id) for i in update]
            elif node == LLM and update:
                self.shown, self.shown_id = [], None
                events += self._from_model_turn(newest_answer(update["messages"]))
        return events

    def _from_model_turn(self, messages: list[BaseMessage]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        for message in messages:
            if isinstance(message, AIMessage):
                self._add_usage(message)
                if message.response_metadata.get("finish_reason") == STEP_LIMIT_REASON:
                    self.status = "max_steps"
                events += [
                    self.event(EventType.TOOL_CALL, tool_call_id=c["id"], name=c["name"], args=c["args"])
                    for c in [*message.tool_calls, *message.invalid_tool_calls]
                ]
            elif isinstance(message, ToolMessage):
                ids = {"tool_call_id": message.tool_call_id, "name": message.name}
                events.append(
                    self.event(EventType.TOOL_RESULT, **ids, content=preview(message.text), status="error")
                )
                events.append(self.event(EventType.TOOL_ERROR, **ids, error=message.text, elapsed_s=0.0))
        return events

    def _add_usage(self, message: AIMessage) -> None:
        if usage := message.usage_metadata:
            for key in self.usage:
                self.usage[key] += usage.get(key, 0)


def stream(
    graph: Pregel,
    input: Any,
    config: RunnableConfig | None = None,
    **kwargs: Any,
) -> AsyncIterator[AgentEvent]:
    """Run ``graph`` and yield its ``AgentEvent``s, from ``run_start`` to ``run_end``.

    ``input=None`` continues the thread from its checkpoint (LangGraph's convention), as does a
    ``Command(resume=...)``. Extra keyword arguments go to ``graph.astream`` (``context``,
    ``durability``...). A graph error yields ``run_end`` with ``status="error"`` and is then
    raised; so does ``ThreadBusyError`` when another run holds the thread (``agent_ng.persistence.thread_lock``).

    Durability defaults to ``"sync"``: each step's checkpoint is stored before its tools start,
    and each tool's result as it finishes, so a run killed mid-step resumes with only the
    unfinished tools.

    A stop keeps what the consumer saw (``agent_ng.graph.settle``): when the consumer is cancelled or
    closes the stream mid-run, the text streamed so far and every finished tool result are
    stored, the unfinished calls get "cancelled" results, and the thread is left idle; the
    cancellation then goes on. A model silent past ``AGENT_MODEL_TIMEOUT_S`` ends the run the
    same way (``ModelTimeoutError``, ``run_end`` status ``error``), so the next question goes
    on from what was shown rather than waiting on ``agent-ng resume``. New messages on a thread
    whose run did not finish (waiting for an approval, or killed) first settle it the same way,
    with "not completed" results.
    """
    return run_events(graph, input, config, **kwargs)  # no Part is asked for: events only


async def run_events(
    graph: Pregel,
    input: Any,
    config: RunnableConfig | None = None,
    *,
    parts: Collection[str] = (),
    subgraphs: bool = False,
    refuse_waiting: bool = False,
    **kwargs: Any,
) -> AsyncIterator[AgentEvent | Part]:
    """``stream``'s run, which also yields the chunks of the LangGraph stream modes in ``parts``.

    Everything ``stream`` promises holds (the same ``AgentEvent``s in the same order, the thread
    held, settled on a stop or a model timeout, ``durability`` ``"sync"`` by default); a
    ``Part`` comes just before the events made from its chunk, in the graph's order. ``parts``
    are modes of ``graph.astream`` (``values``, ``updates``, ``messages``, ``custom``, ``debug``,
    ``checkpoints``, ``tasks``), asked for together with the ones the events are made from, so
    the graph runs once for both. With ``subgraphs=True`` the subgraphs' chunks come too, each
    ``Part`` naming its ``namespace``; events are made from the graph's own chunks only.

    ``events`` in ``parts`` runs the graph under ``graph.astream_events(version="v2")`` instead
    (as the LangGraph Server does for ``stream_mode="events"``): the graph's own stream chunks
    are read out of its ``on_chain_stream`` events, and every other event is a
    ``Part("events", event)``. That costs about three times as much per token.

    ``refuse_waiting``: new input on a thread whose calls wait for approval ends the run with
    ``UnfinishedRunError`` (its ``run_end`` first) instead of settling them as not completed.
    """
    if unknown := set(parts) - PART_MODES:
        raise ValueError(f"not a stream mode run_events knows: {', '.join(sorted(unknown))}")
    if graph.checkpointer:
        kwargs.setdefault("durability", "sync")
    events_api = EVENTS in parts
    wanted = frozenset(parts) - {EVENTS}
    tap = None if parts or subgraphs else TokenTap()
    modes = STREAM_MODES if tap else [*STREAM_MODES, *sorted(wanted.union([TOKENS]).difference(STREAM_MODES))]
    shown: dict[str, ToolMessage] = {}
    config = {**(config or {})}
    configurable = {k: v for k, v in config.get("configurable", {}).items() if k not in (TOKEN_TAP, RECORDS)}
    tapped = {TOKEN_TAP: tap, RECORDS: tap.put_record} if tap else {}
    config["configurable"] = {**configurable, SHOWN_RESULTS: shown} | tapped
    config.setdefault("run_id", uuid.uuid4())
    thread_id = config.get("configurable", {}).get("thread_id")
    run = _Run(str(config["run_id"]), thread_id)
    yield run.event(EventType.RUN_START, input=summarize(input), attempt=attempt_of(config))
    durable = graph.checkpointer is not None and thread_id is not None
    try:
        async with hold_thread(graph, thread_id):
            if durable and is_new_input(input):
                await settle(graph, earlier_runs(config), text=SUPERSEDED, refuse_waiting=refuse_waiting)
            try:
                if events_api:
                    source = graph.astream_events(
                        input, config, version="v2", stream_mode=modes, subgraphs=subgraphs, **kwargs
                    )
                else:
                    source = graph.astream(input, config, stream_mode=modes, subgraphs=subgraphs, **kwargs)
                if tap is not None:
                    source = tap.merged(source, makes_events)
                async with aclosing(source):
                    async for item in source:
                        if events_api:
                            if item["event"] != "on_chain_stream" or item["run_id"] != run.run_id:
                                yield Part(EVENTS, item)
                                continue
                            item = item["data"]["chunk"]
                        if subgraphs:
                            namespace, mode, chunk = item
                        else:
                            (mode, chunk), namespace = item, ()
                        if mode in wanted:
                            yield Part(mode, chunk, namespace)
                        if not namespace:
                            for event in run.translate(mode, chunk):
                                yield event
            except (asyncio.CancelledError, GeneratorExit) as stop:
                if durable:
                    await shielded(settle_stopped(graph, at_head(config), stop, run.partial_answer(), shown))
                raise
            except ModelTimeoutError:
                if durable:
                    await settle(graph, at_head(config), partial=run.partial_answer("timeout"), shown=shown)
                raise
    except FencedError:  # another replica took the run over: it goes on there, so this is no end
        raise
    except Exception as e:
        yield run.event(EventType.RUN_END, status="error", usage=run.usage, error=f"{type(e).__name__}: {e}")
        raise
    yield run.event(EventType.RUN_END, status=run.status, usage=run.usage)


def makes_events(item: tuple[str, Any]) -> bool:
    """Whether ``_Run.translate`` makes an event of a tapped run's chunk: of its ``updates``,
    only an interrupt or a model turn does; a tool task's update makes none."""
    mode, chunk = item
    return mode != "updates" or INTERRUPTS in chunk or bool(chunk.get(LLM))


def newest_answer(messages: list[BaseMessage]) -> list[BaseMessage]:
    """The model's answer and what follows it; before it, a model turn that repaired the
    thread (``agent_ng.nodes.llm``) carries the whole stored history again."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], AIMessage)), 0)
    return messages[last:]


def at_head(config: RunnableConfig) -> RunnableConfig:
    """The run's config addressing its thread's newest checkpoint (the run's own, once it ran),
    not the one it started from (``checkpoint_id``): a stop settles what the run left."""
    configurable = {k: v for k, v in config["configurable"].items() if k != "checkpoint_id"}
    return {**config, "configurable": configurable}


def earlier_runs(config: RunnableConfig) -> RunnableConfig:
    """The run's config without its id, to settle what an earlier run left before this one
    starts: LangGraph takes a newest checkpoint with the run's own id for a re-entry of that
    run and resumes it, dropping the new input."""
    configurable = {k: v for k, v in config["configurable"].items() if k != "run_id"}
    metadata = {k: v for k, v in (config.get("metadata") or {}).items() if k != "run_id"}
    return {**config, "configurable": configurable, "metadata": metadata}


def attempt_of(config: RunnableConfig) -> int:
    """The run's attempt (``run_attempt`` in its metadata, as LangGraph Server keeps it): 1 unless
    another replica took the run over (``agent_ng.service.background``)."""
    return (config.get("metadata") or {}).get(RUN_ATTEMPT, 1)


def is_new_input(input: Any) -> bool:
    """Whether ``input`` starts a new turn (rather than continuing or resuming the thread)."""
    return input is not None and not isinstance(input, Command)


async def settle_stopped(
    graph: Pregel,
    config: RunnableConfig,
    stop: BaseException,
    partial: AIMessage | None,
    shown: dict[str, ToolMessage],
) -> None:
    """Settle after a stop, once LangGraph has finished writing: a cancelled run hands over
    the task that still stores its last writes in the ``CancelledError``'s args."""
    await asyncio.gather(*(a for a in stop.args if isinstance(a, asyncio.Future)), return_exceptions=True)
    await settle(graph, config, partial=partial, shown=shown)


async def shielded(work: Awaitable[Any]) -> None:
    """Finish ``work`` even if the task running it is cancelled again meanwhile."""
    with anyio.CancelScope(shield=True):
        await work


def summarize(input: Any, limit: int = 200) -> str | None:
    """A short, readable form of the run's input for ``run_start``."""
    if input is None:
        return None
    if isinstance(input, Command):
        return f"resume: {input.resume!r}"[:limit]
    messages = input.get("messages") if isinstance(input, dict) else None
    if messages:
        return convert_to_messages(messages[-1:])[0].text[:limit]
    return repr(input)[:limit]
