"""The tools the agent can call, and the adapter that makes any tool fit the graph.

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
from dataclasses import dataclass
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, StructuredTool, tool
from langchain_core.tools.base import create_schema_from_function

from graph.settings import Settings
from tools import progress
from tools.calculator import calculator
from tools.file_search import make_file_search
from tools.http_fetch import make_http_fetch
from tools.primes import count_primes
from tools.progress import Progress
from tools.sql_query import make_sql_query

if TYPE_CHECKING:
    from graph.settings import Settings


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """How the engine treats one tool; unset fields fall back to settings."""

    timeout_s: float | None = None
    cacheable: bool = False
    cache_ttl_s: float | None = None
    concurrency_group: str | None = None
    requires_approval: bool = False


SPEC_KEY = "agent_ng"


def configure(tool_: BaseTool, **spec: Any) -> BaseTool:
    """Attach a ``ToolSpec`` to a tool (kept in ``tool.metadata``, so any tool can carry one)."""
    tool_.metadata = {**(tool_.metadata or {}), SPEC_KEY: ToolSpec(**spec)}
    return tool_


def spec_of(tool_: BaseTool | None) -> ToolSpec:
    spec = (tool_.metadata or {}).get(SPEC_KEY) if tool_ is not None else None
    return spec if isinstance(spec, ToolSpec) else ToolSpec()


# Pure functions of their arguments: a repeated call may reuse the stored result.
configure(calculator, cacheable=True, timeout_s=10)
configure(count_primes, cacheable=True)


def builtin_tools(settings: Settings | None = None) -> list[BaseTool]:
    """The tools the agent has when none are given; ``sql_query`` only with ``AGENT_SQL_DB``."""
    settings = settings or Settings()
    return [calculator, count_primes, *real_tools(settings)]


def real_tools(settings: Settings) -> list[BaseTool]:
    """The tools that reach outside the process, built from settings and given their specs."""
    fetch = make_http_fetch(
        allow=settings.http_allow,
        max_bytes=settings.http_max_bytes,
        timeout_s=settings.http_timeout_s,
        max_redirects=settings.http_max_redirects,
    )
    search = make_file_search(settings.files_root)
    tools = [
        configure(fetch, concurrency_group="network", timeout_s=settings.http_timeout_s + 5),
        configure(search, concurrency_group="files"),
    ]
    if settings.sql_db is not None:
        query = make_sql_query(
            settings.sql_db, max_rows=settings.sql_max_rows, timeout_s=settings.sql_timeout_s
        )
        tools.append(configure(query, concurrency_group="sql", timeout_s=settings.sql_timeout_s + 5))
    return tools


def adapt_all(tools: Sequence[BaseTool | Callable[..., Any]]) -> list[BaseTool]:
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
    return (tool_.metadata or {}).get(SOURCE_KEY, "built-in")


@asynccontextmanager
async def load_tools(settings: Settings) -> AsyncIterator[list[BaseTool]]:
    """The built-in tools plus, with ``AGENT_MCP_CONFIG``, the MCP servers' tools.

    The servers' sessions stay open inside the block, so build and run the graph there:

        async with load_tools(settings) as tools:
            graph = build_graph(tools=tools, settings=settings)
    """
    if settings.mcp_config is None:
        yield builtin_tools(settings)
        return
    async with mcp_servers().open_mcp_servers(settings.mcp_config) as servers:
        yield distinct([*builtin_tools(settings), *servers.tools])


def mcp_servers():
    """``tools.mcp_servers``, or a clear error when the mcp extra is not installed."""
    try:
        from tools import mcp_servers
    except ImportError as e:
        raise RuntimeError(f"AGENT_MCP_CONFIG needs the mcp extra: pip install 'agent-ng[mcp]' ({e})") from e
    return mcp_servers


def distinct(tools: list[BaseTool]) -> list[BaseTool]:
    """``tools`` if their names differ; else a clear error (a tool node keeps one per name)."""
    sources: dict[str, list[str]] = {}
    for t in tools:
        sources.setdefault(t.name, []).append(source_of(t))
    clashes = {name: where for name, where in sources.items() if len(where) > 1}
    if clashes:
        raise ValueError(
            f"tools with the same name: {clashes}; set \"prefix\": true on an MCP server to "
            "name its tools <server>_<tool>"
        )
    return tools
