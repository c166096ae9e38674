"""How the engine treats a tool (``ToolSpec``), and the adapter that makes any tool fit the graph.

A tool is a LangChain tool. Besides plain functions and ``BaseTool`` objects, a tool may be
written as an async generator that yields ``Progress`` while it works and yields its result
last; ``adapt`` turns it into an ordinary LangChain tool whose progress goes to the stream:

    async def download(url: str):
        \"\"\"Fetch a URL.\"\"\"
        for i, part in enumerate(parts):
            yield Progress((i + 1) / len(parts), f"part {i + 1}")
        yield body
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, tool
from langchain_core.tools.base import create_schema_from_function

from agent_ng.tools import progress
from agent_ng.tools.progress import Progress


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """How the engine treats one tool; unset fields fall back to settings."""

    timeout_s: float | None = None
    cacheable: bool = False
    cache_ttl_s: float | None = None
    concurrency_group: str | None = None
    requires_approval: bool = False
    max_output_bytes: int | None = None


SPEC_KEY = "agent_ng_spec"
"""Key of a tool's ``ToolSpec`` in ``tool.metadata``."""


def configure(obj: BaseTool | Callable[..., Any], **spec: Any) -> BaseTool:
    """Attach a ``ToolSpec`` to a tool (kept in ``tool.metadata``, so any tool can carry one); a
    function or an async generator is made a tool first (``adapt``)."""
    tool_ = adapt(obj)
    tool_.metadata = {**(tool_.metadata or {}), SPEC_KEY: ToolSpec(**spec)}
    return tool_


def spec_of(tool_: BaseTool | None) -> ToolSpec:
    """The tool's ``ToolSpec``; the defaults for a tool without one, or an unknown tool (``None``)."""
    spec = (tool_.metadata or {}).get(SPEC_KEY) if tool_ is not None else None
    return spec if isinstance(spec, ToolSpec) else ToolSpec()


def adapt_all(tools: Sequence[BaseTool | Callable[..., Any]]) -> list[BaseTool]:
    """``adapt`` each of ``tools``."""
    return [adapt(t) for t in tools]


def adapt(obj: BaseTool | Callable[..., Any]) -> BaseTool:
    """A ``BaseTool`` for ``obj``: a tool as is, an async generator via ``from_generator``."""
    if isinstance(obj, BaseTool):
        return obj
    if inspect.isasyncgenfunction(obj):
        return from_generator(obj)
    return tool(obj)


def from_generator(fn: Callable[..., AsyncIterator[Any]]) -> BaseTool:
    """Wrap an async generator tool: ``Progress`` items are reported, the last other item is the result."""

    async def run(**kwargs: Any) -> Any:
        result: Any = None
        async for item in fn(**kwargs):
            if isinstance(item, Progress):
                progress.report(item.fraction, item.message)
            else:
                result = item
        return result

    name = fn.__name__
    return StructuredTool.from_function(
        coroutine=run,
        name=name,
        description=inspect.getdoc(fn) or name,
        args_schema=create_schema_from_function(name, fn),
    )


SOURCE_KEY = "agent_ng_source"
"""Metadata key naming where a tool comes from, e.g. ``mcp:files``; absent for built-in tools."""


class McpConfigError(ValueError):
    """The MCP config file cannot be used as it is; the message says where and why.

    Defined here, not beside the MCP code, so the CLI can name it without the mcp extra."""


def source_of(tool_: BaseTool) -> str:
    """Where the tool comes from (``mcp:<server>``), ``built-in`` for the agent's own."""
    return (tool_.metadata or {}).get(SOURCE_KEY, "built-in")
