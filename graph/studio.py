"""The graph that ``langgraph dev`` (LangGraph Studio) and the LangGraph Platform serve.

``langgraph.json`` points here (``agent_ng.graph.studio:graph``). The agent is compiled once, at
import, without a checkpointer (the platform brings its own: ours, through
``agent_ng.persistence.studio``). ``graph`` is the factory the platform enters around each use
of it: a run holds its thread's lock (``agent_ng.persistence.thread_lock``) on the saver the
platform opened, for as long as the run lasts, as ``agent-ng ask`` and ``agent-ng serve`` runs
do, so neither side writes a thread the other is running; a run on a busy thread ends in
``ThreadBusyError``. Reads (state, history, schemas) take no lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from agent_ng.graph.agent import build_graph
from agent_ng.persistence.studio import opened
from agent_ng.persistence.thread_lock import locks_of

agent = build_graph()

FOR_EXECUTION = "__is_for_execution__"
"""The key langgraph-api sets in the factory's ``configurable`` when the graph is wanted for a run."""


@asynccontextmanager
async def graph(config: RunnableConfig) -> AsyncIterator[CompiledStateGraph]:
    """The agent, its thread held while a run uses it."""
    configurable = config.get("configurable", {})
    thread_id, saver = configurable.get("thread_id"), opened()
    if not (configurable.get(FOR_EXECUTION) and thread_id and saver is not None):
        yield agent
        return
    async with locks_of(saver).hold(str(thread_id)):
        yield agent
