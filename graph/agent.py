"""The agent: a model node and a tool node, one ``Send`` per tool call.

    graph = build_graph(checkpointer=saver)          # embed it
    async for event in stream(graph, {"messages": [("user", "17*23?")]}, config): ...

When the model asks for several tools, each call becomes its own task in one superstep, so
they run in parallel (at most ``max_concurrency`` at once), and each result is streamed and
checkpointed the moment its tool finishes. ``agent_ng.graph.studio`` holds the graph that
``langgraph.json`` names, compiled without a checkpointer: the LangGraph platform brings its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from agent_ng.engine.chain import group_limits_of, tool_call_chain
from agent_ng.engine.concurrency import GroupLimits
from agent_ng.engine.store import MemoryToolStore, ToolStore
from agent_ng.engine.stores import open_tool_store
from agent_ng.engine.tool_calls import ToolCallWrapper, make_tool_node
from agent_ng.graph.toolset import builtin_tools, load_tools
from agent_ng.models.chat import resolve_model
from agent_ng.nodes import LLM, TOOLS
from agent_ng.nodes.llm import make_llm_node
from agent_ng.nodes.memory import make_memory
from agent_ng.nodes.state import AgentState
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.settings import Settings
from agent_ng.tools.registry import adapt_all


async def route_tool_calls(state: AgentState) -> list[Send] | Literal["llm", "__end__"]:
    """Fan out the model's pending tool calls, one task each; end when it asked for none.

    Async although it awaits nothing: LangGraph runs a sync router of an async graph in a
    thread pool, a thread hop per model turn for a few list comprehensions."""
    messages = state["messages"]
    answer = next(m for m in reversed(messages) if isinstance(m, AIMessage))
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    pending = [call for call in answer.tool_calls if call["id"] not in answered]
    if pending:
        return [Send(TOOLS, [call]) for call in pending]
    if answer.tool_calls or answer.invalid_tool_calls:
        return LLM
    return END


def build_graph(
    model: BaseChatModel | str | None = None,
    tools: Sequence[BaseTool | Callable[..., Any]] | None = None,
    checkpointer: BaseCheckpointSaver | None = None,
    settings: Settings | None = None,
    *,
    tool_wrappers: Sequence[ToolCallWrapper] | None = None,
    tool_store: ToolStore | None = None,
) -> CompiledStateGraph:
    """The agent graph. Tool calls go through the chain of ``agent_ng.engine.chain``, over
    ``tool_store`` (default: one in memory); ``tool_wrappers`` replace the engine's part of it.
    ``model`` is a chat model, a ``"provider:model"`` string, or ``None`` for ``AGENT_MODEL``'s."""
    settings = settings or Settings()
    model = resolve_model(model, settings)
    tools = adapt_all(builtin_tools(settings) if tools is None else tools)

    builder = StateGraph(AgentState)
    builder.add_node(
        LLM,
        make_llm_node(
            model,
            tools,
            max_steps=settings.max_steps,
            timeout_s=settings.model_timeout_s,
            system_prompt=settings.system_prompt,
            memory=make_memory(
                model,
                max_tokens=settings.memory_max_tokens,
                summarize=settings.memory_summary,
                timeout_s=settings.model_timeout_s,
            ),
        ),
    )
    store = tool_store or MemoryToolStore(settings.cache_max_entries)
    builder.add_node(TOOLS, make_tool_node(tools, tool_call_chain(settings, store, tool_wrappers)))
    builder.add_edge(START, LLM)
    builder.add_conditional_edges(LLM, route_tool_calls, [TOOLS, LLM, END])
    builder.add_edge(TOOLS, LLM)
    compiled = builder.compile(checkpointer=checkpointer, name="agent-ng")
    return compiled.with_config(max_concurrency=settings.max_concurrency)


@dataclass(frozen=True, slots=True)
class Agent:
    """An open agent: its graph, the tool store its engine uses, and the process's group limits
    (``None`` without ``AGENT_GROUP_LIMITS``), e.g. for a server's metrics."""

    graph: CompiledStateGraph
    tool_store: ToolStore
    group_limits: GroupLimits | None


@asynccontextmanager
async def open_agent(
    settings: Settings,
    model: BaseChatModel | str | None = None,
    tools: Sequence[BaseTool | Callable[..., Any]] | None = None,
) -> AsyncIterator[Agent]:
    """The agent over everything ``settings`` name, open for the block: the checkpointer, the
    tool store, and the built-in plus MCP tools (only ``tools`` if given: no MCP server starts).
    The model and then the tools come first, so an unusable ``AGENT_MODEL`` or MCP config fails
    before any server starts or store is opened."""
    model = resolve_model(model, settings)
    async with (
        load_tools(settings) if tools is None else nullcontext(tools) as loaded,
        open_checkpointer(settings.checkpoint_url, pool_size=settings.checkpoint_pool_size) as saver,
        open_tool_store(settings.cache_url, max_entries=settings.cache_max_entries) as tool_store,
    ):
        graph = build_graph(model, loaded, saver, settings, tool_store=tool_store)
        yield Agent(graph, tool_store, group_limits_of(settings))
