"""The ways to read one model answer, each as a coroutine that consumes it all.

Used by the streaming and first-token benchmarks: the raw model, a bare one-node LangGraph
graph, langchain's ``create_agent``, and our graph read three ways (messages mode,
``astream_events`` v2, our ``AgentEvent`` stream). Each path returns how many text chunks it
saw and when the first one arrived (``perf_counter`` seconds), so both benchmarks read the same
code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graph.agent import build_graph
from graph.events import stream
from graph.settings import Settings

Reader = Callable[[], Awaitable[tuple[int, float | None]]]
"""Read one whole answer; return (text chunks seen, perf_counter of the first)."""

QUESTION = "go"


def bench_settings(**overrides: Any) -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="", **overrides)


def bare_graph(model: BaseChatModel) -> CompiledStateGraph:
    """The smallest LangGraph agent: one node that calls the model."""

    async def call_model(state: MessagesState, config) -> dict:
        return {"messages": [await model.ainvoke(state["messages"], config)]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    return builder.compile()


def our_graph(model: BaseChatModel, checkpointer: BaseCheckpointSaver | None = None):
    return build_graph(model, tools=[], checkpointer=checkpointer, settings=bench_settings())


def paths(
    model: BaseChatModel, checkpointer: BaseCheckpointSaver | None = None
) -> dict[str, Reader]:
    """Every path over ``model``; with a checkpointer, our graph gets it and a fresh thread per run."""
    from langchain.agents import create_agent

    bare = bare_graph(model)
    peer = create_agent(model, tools=[])
    ours = our_graph(model, checkpointer)
    runs = iter(range(10**9))

    def config() -> dict:
        return {"configurable": {"thread_id": f"bench-{next(runs)}"}}

    def fresh_input() -> dict:
        return {"messages": [HumanMessage(QUESTION)]}

    async def raw() -> tuple[int, float | None]:
        n, first = 0, None
        async for chunk in model.astream([HumanMessage(QUESTION)]):
            if chunk.content:
                n += 1
                first = first or perf_counter()
        return n, first

    async def messages_mode(graph: CompiledStateGraph) -> tuple[int, float | None]:
        n, first = 0, None
        async for chunk, _meta in graph.astream(fresh_input(), config(), stream_mode="messages"):
            if isinstance(chunk, AIMessageChunk) and chunk.content:
                n += 1
                first = first or perf_counter()
        return n, first

    async def bare_messages() -> tuple[int, float | None]:
        return await messages_mode(bare)

    async def create_agent_messages() -> tuple[int, float | None]:
        return await messages_mode(peer)

    async def ours_messages() -> tuple[int, float | None]:
        return await messages_mode(ours)

    async def ours_astream_events() -> tuple[int, float | None]:
        n, first = 0, None
        async for event in ours.astream_events(fresh_input(), config(), version="v2"):
            if event["event"] == "on_chat_model_stream" and event["data"]["chunk"].content:
                n += 1
                first = first or perf_counter()
        return n, first

    async def ours_agent_events() -> tuple[int, float | None]:
        n, first = 0, None
        async for event in stream(ours, fresh_input(), config()):
            if event.type == "content":
                n += 1
                first = first or perf_counter()
        return n, first

    return {
        "raw model.astream": raw,
        "bare graph, messages": bare_messages,
        "create_agent, messages": create_agent_messages,
        "ours, messages": ours_messages,
        "ours, astream_events v2": ours_astream_events,
        "ours, AgentEvent stream": ours_agent_events,
    }
