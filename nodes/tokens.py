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

The order is LangGraph's, exactly: the graph's stream is read by a task of its own (the pump)
that takes its next chunk only once the reader has taken every chunk before it, as a reader of
``graph.astream`` drives it, so the graph moves to its next step when the reader has seen what
the last step did. The ``llm`` node runs in a step of its own, started after the reader took
every chunk of the steps before, and its answer (the ``updates`` chunk) comes after its last
token; so every token lies between the same chunks as in messages mode.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.constants import CONF

from agent_ng.nodes import LLM

TOKEN_TAP = "__agent_ng_token_tap"
"""The configurable key of the run's ``TokenTap`` (``__``: LangGraph keeps it out of checkpoints)."""
TAPPED = {"langgraph_node": LLM}
"""The metadata a tapped token carries, as much of messages mode's as the events read."""
NS = "checkpoint_ns"
NS_SEP = "|"


class TokenTap:
    """The run's tokens as the node put them, and the graph's chunks as its stream made them."""

    __slots__ = ("_ready", "_wake", "_go")

    def __init__(self) -> None:
        self._ready: deque[tuple[str, Any]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._go: asyncio.Future[None] | None = None

    def put(self, chunk: AIMessage) -> None:
        """A token, in messages mode's shape: ``("messages", (chunk, metadata))``."""
        self._ready.append(("messages", (chunk, TAPPED)))
        if self._wake is not None:
            self._alert()

    def _alert(self, *_: Any) -> None:
        if self._wake is not None:
            if not self._wake.done():
                self._wake.set_result(None)
            self._wake = None

    async def _pump(self, source: AsyncIterator[tuple[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        async with aclosing(source):
            async for item in source:
                self._ready.append(item)
                self._alert()
                self._go = loop.create_future()
                await self._go

    async def merged(self, source: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[tuple[str, Any]]:
        """``source``'s ``(mode, chunk)`` items with the tapped tokens among them, in order.

        A stop (cancelled, or closed) stops the graph's stream and waits for it to finish
        storing what it must, as stopping a reader of ``graph.astream`` does."""
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump(source))
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
    configurable = config.get(CONF) or {}
    tap = configurable.get(TOKEN_TAP)
    if tap is None or NS_SEP in configurable.get(NS, ""):
        return None
    return tap
