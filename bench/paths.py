"""The ways to read one model answer, each as a coroutine that consumes it all.

Used by the streaming and first-token benchmarks: the raw model, a bare one-node LangGraph
graph, langchain's ``create_agent``, and our graph read three ways (messages mode,
``astream_events`` v2, our ``AgentEvent`` stream, and the same events with the tokens taken
from messages mode), and our SSE endpoint read over HTTP
(``sse_path``, which needs a server started and stopped around it). Each path returns how many text chunks it
saw and when the first one arrived (``perf_counter`` seconds), so both benchmarks read the same
code.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

import httpx
import uvicorn
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import TOKENS, AgentEvent, run_events, stream
from agent_ng.settings import Settings

Reader = Callable[[], Awaitable[tuple[int, float | None]]]
"""Read one whole answer; return (text chunks seen, perf_counter of the first)."""

QUESTION = "go"
VIA_MESSAGES = "ours, AgentEvent stream via messages mode"
"""The same events with the tokens taken from LangGraph's messages mode, as before the token
tap (``agent_ng.nodes.tokens``): what a LangGraph Server run that asks for messages pays."""
STARTUP_GUARD_S = 30


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

    async def ours_agent_events_via_messages() -> tuple[int, float | None]:
        n, first = 0, None
        async for item in run_events(ours, fresh_input(), config(), parts=(TOKENS,)):
            if type(item) is AgentEvent and item.type == "content":
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
        VIA_MESSAGES: ours_agent_events_via_messages,
    }


SSE = "ours, SSE read by httpx"


@asynccontextmanager
async def sse_path(model: BaseChatModel) -> AsyncIterator[Reader]:
    """Our SSE endpoint over ``model``, served by uvicorn on a free 127.0.0.1 port in this
    event loop and read by an httpx client: the whole path to a browser, both ends in this
    process (so its CPU time is the server's and the client's together)."""
    from agent_ng.service.app import create_app
    from agent_ng.service.settings import ServiceSettings

    settings = ServiceSettings(checkpoint_url="memory://", cache_url="memory://", system_prompt="")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, model=model, tools=[]), log_level="warning")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_GUARD_S):
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(timeout=STARTUP_GUARD_S) as client:

            async def read() -> tuple[int, float | None]:
                n, first = 0, None
                async with client.stream(
                    "POST", f"{base}/threads/{uuid.uuid4()}/runs/stream", json={"input": QUESTION}
                ) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if line == "event: content":
                            n += 1
                            first = first or perf_counter()
                return n, first

            yield read
    finally:
        server.should_exit = True
        await serving
        sock.close()
