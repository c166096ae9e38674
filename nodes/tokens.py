"""The model's tokens handed from the ``llm`` node to ``run_events`` directly, past LangGraph's
per-token path, when no consumer asked for LangGraph's messages mode.

In messages mode each chunk goes through langchain-core's callback dispatch, LangGraph's
messages handler, a ``call_soon_threadsafe`` into the stream's queue (a self-pipe write) and
LangGraph's stream waiter before its reader sees it: more per token than the model's own stream
costs (bench ``streaming``). ``run_events`` needs none of that when it is asked for events only,
so it runs the graph without messages mode and gives the run a ``TokenTap`` (in its config):
the node puts each chunk there as the model makes it, and ``TokenTap.merged`` reads the tap and
the graph's own stream as one, in the order they happened. Whoever asks for messages mode,
``astream_events`` or any other LangGraph stream mode (Studio, the LangGraph Server API, a
caller of ``graph.astream``) gets LangGraph's path, every token in it, as before.

The tool-call records (``tool_start``... ``agent_ng.engine.tool_calls.RECORDS``) take the same
short cut instead of custom mode, which costs the same per record: 16 parallel tools write 48.
And a chunk the reader would make no event of (a tool task's ``updates``) is left out by the
pump, so the reader is not woken for it.

The order is LangGraph's, exactly: the graph's stream is read by a task of its own (the pump)
that takes its next chunk only once the reader has taken every chunk and record before it, as a
reader of ``graph.astream`` drives it, so the graph moves to its next step when the reader has
seen what the last step did. The ``llm`` node runs in a step of its own, started after the
reader took every chunk of the steps before, and its answer (the ``updates`` chunk) comes after
its last token; so every token lies between the same chunks as in messages mode. A tool's
records are written by its task before the task ends, so they come before the step's end as
they do in custom mode.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import anyio
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.constants import CONF

from agent_ng.contract import Record, run_own
from agent_ng.nodes import LLM

TOKEN_TAP = "__agent_ng_token_tap"
"""The configurable key of the run's ``TokenTap`` (``__``: LangGraph keeps it out of checkpoints)."""
TAPPED = {"langgraph_node": LLM}
"""The metadata a tapped token carries, as much of messages mode's as the events read."""
Keep = Callable[[tuple[str, Any]], bool]


class TokenTap:
    """The run's tokens as the node put them, its tool-call records as the engine wrote them,
    and the graph's chunks as its stream made them."""

    __slots__ = ("_ready", "_wake", "_go", "_loop", "_thread")

    def __init__(self) -> None:
        self._ready: deque[tuple[str, Any]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._go: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    def put(self, chunk: AIMessage) -> None:
        """A token, in messages mode's shape: ``("messages", (chunk, metadata))``."""
        self._add(("messages", (chunk, TAPPED)))

    def put_record(self, record: Record) -> None:
        """A tool-call record, in custom mode's shape: ``("custom", record)``; from any thread (a
        sync tool reports progress from its worker thread), added on the loop in the order
        written, as LangGraph's custom stream writer adds it."""
        if threading.get_ident() == self._thread:
            self._add(("custom", record))
        else:
            self._loop.call_soon_threadsafe(self._add, ("custom", record))

    def _add(self, item: tuple[str, Any]) -> None:
        self._ready.append(item)
        if self._wake is not None:
            self._alert()

    def _alert(self, *_: Any) -> None:
        if self._wake is not None:
            if not self._wake.done():
                self._wake.set_result(None)
            self._wake = None

    async def _pump(self, source: AsyncIterator[tuple[str, Any]], keep: Keep) -> None:
        loop = asyncio.get_running_loop()
        async with aclosing(source):
            async for item in source:
                if keep(item):
                    self._ready.append(item)
                    self._alert()
                elif self._wake is not None:
                    continue  # the reader took everything and asks for more: as if it took this too
                self._go = loop.create_future()
                await self._go

    async def merged(
        self, source: AsyncIterator[tuple[str, Any]], keep: Keep = lambda _: True
    ) -> AsyncIterator[tuple[str, Any]]:
        """``source``'s ``(mode, chunk)`` items with the tapped tokens and records among them, in
        order; an item of ``source`` that ``keep`` refuses is left out, without a hand-over.

        A stop (cancelled, or closed) stops the graph's stream and waits for it to finish
        storing what it must, as stopping a reader of ``graph.astream`` does."""
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        pump = loop.create_task(self._pump(source, keep))
        pump.add_done_callback(self._alert)
        ready = self._ready
        try:
            while True:
                while ready:
                    yield ready.popleft()
                if pump.done():
                    pump.result()
                    return
                if self._go is not None:
                    self._go.set_result(None)
                    self._go = None
                self._wake = loop.create_future()
                await self._wake
        finally:
            if not pump.done():
                pump.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(pump, return_exceptions=True)


def token_tap(config: RunnableConfig) -> TokenTap | None:
    """The run's tap, for the ``llm`` node of the graph ``run_events`` runs (not for one of a
    graph run inside it, say from a tool, which inherits the config: its tokens are not the
    run's answer, and messages mode leaves them out too)."""
    return run_own(config.get(CONF) or {}, TOKEN_TAP)
