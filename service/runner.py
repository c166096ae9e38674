"""Runs as the service makes them: one at a time per thread, counted, and settled if cut off.

``Runner.events`` is ``agent_ng.graph.events.run_events`` (``stream``, and LangGraph's own stream
modes for those who ask) plus what a server needs around it:

- a second run on a busy thread waits for the first to end (LangGraph's "enqueue" strategy),
  so two runs never write the same thread at once;
- new input (a question) on a thread whose calls wait for approval is refused (``UnfinishedRunError``,
  shared with the CLI), so a person's pending decision is not silently superseded; a thread a
  crash left mid-step is settled by ``stream`` (finished results kept, the rest "not completed");
- every ``AgentEvent`` feeds the metrics;
- when the consumer goes away (the client disconnected, so the response closes the stream or
  cancels it), the graph run is cancelled, its running tools with it, and ``stream`` settles
  the thread (``agent_ng.graph.settle``) under a shield, so the next run finds a valid history.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any
from weakref import WeakValueDictionary

from langchain_core.messages import HumanMessage
from langgraph.pregel import Pregel

from agent_ng.graph.events import AgentEvent, Part, run_events
from agent_ng.persistence.fencing import FencedError
from agent_ng.persistence.threads import UnfinishedRunError, refuse_if_waiting, thread_config
from agent_ng.persistence.unavailable import CheckpointUnavailableError
from agent_ng.service.metrics import Metrics

log = logging.getLogger("agent_ng.service")


@dataclass
class Runner:
    """Runs the graph for the service: one run per thread at a time (the next waits), each one counted."""

    graph: Pregel
    metrics: Metrics
    _locks: WeakValueDictionary[str, asyncio.Lock] = field(default_factory=WeakValueDictionary)

    def busy(self, thread_id: str) -> bool:
        lock = self._locks.get(thread_id)
        return lock is not None and lock.locked()

    async def ready(self, thread_id: str) -> None:
        """Refuse a question on a thread whose calls wait for approval (``UnfinishedRunError``);
        a thread a crash left mid-step is settled by ``stream`` itself."""
        refuse_if_waiting(thread_id, await self.graph.aget_state(thread_config(thread_id)))

    @asynccontextmanager
    async def _turn(self, thread_id: str) -> AsyncIterator[None]:
        """Hold the thread for one run; while another run holds it, wait (counted as waiting)."""
        lock = self._locks.get(thread_id)
        if lock is None:
            lock = self._locks[thread_id] = asyncio.Lock()
        with self.metrics.runs_waiting.track_inprogress():
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    async def events(
        self,
        thread_id: str,
        input: Any,
        run_config: dict[str, Any] | None = None,
        **stream_kwargs: Any,
    ) -> AsyncIterator[AgentEvent | Part]:
        """Run ``input`` on ``thread_id`` and yield the run's events, ``run_start`` to ``run_end``.

        ``input``: a ``str`` is a question (a ``HumanMessage``); anything else goes to the graph
        as it is (``{"messages": [...]}``, ``None`` to continue, a ``Command`` to resume). Only
        new input is refused on a thread waiting for approval: a resume is what it waits for.
        ``stream_kwargs`` go to ``run_events`` (``parts``, ``subgraphs``, ``context``,
        ``durability``...), whose ``Part``s come through among the events. ``run_config``'s
        ``configurable`` is kept, with ``thread_id`` set to this thread.

        Stopping this iterator (closed or cancelled) stops the run where it stands, which
        cancels the running tools and stores exactly the events this iterator yielded. A graph
        error ends the stream after its ``run_end`` (status ``error``) and is logged, not raised
        into a response that has already told the client.
        """
        run_config = run_config or {}
        configurable = {**run_config.get("configurable", {}), "thread_id": thread_id}
        config = {**run_config, "configurable": configurable}
        if isinstance(input, str):
            input = {"messages": [HumanMessage(input)]}
        async with self._turn(thread_id):
            started = perf_counter()
            first_content, finished = True, False
            self.metrics.runs_active.inc()
            try:
                run = run_events(self.graph, input, config, refuse_waiting=True, **stream_kwargs)
                async with aclosing(run) as items:
                    async for item in items:
                        if type(item) is AgentEvent:
                            self.metrics.observe(item, first_content=first_content)
                            first_content = first_content and item.type != "content"
                        yield item
                finished = True
            except FencedError:
                finished = True
                raise
            except (UnfinishedRunError, CheckpointUnavailableError) as e:  # left waiting, or no database
                finished = True
                log.warning("run on thread %s ended: %s", thread_id, e)
            except Exception:
                finished = True
                log.exception("run on thread %s failed", thread_id)
            finally:
                self.metrics.runs_active.dec()
                if not finished:  # the consumer stopped first: the client went away
                    self.metrics.cancelled(perf_counter() - started)
                    log.info("run on thread %s cancelled: the client went away", thread_id)
