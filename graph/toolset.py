"""The agent's tools from settings: the built-in ones, their specs, and MCP servers' tools.

The tools themselves (``agent_ng.tools``) know nothing of settings; this is where settings
become their arguments and their ``ToolSpec``s.

    async with load_tools(settings) as tools:
        graph = build_graph(tools=tools, settings=settings)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langchain_core.tools import BaseTool

from agent_ng.settings import Settings
from agent_ng.tools.calculator import calculator
from agent_ng.tools.file_search import make_file_search
from agent_ng.tools.http_fetch import make_http_fetch
from agent_ng.tools.primes import count_primes
from agent_ng.tools.registry import configure, source_of
from agent_ng.tools.sql_query import make_sql_query

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
            settings.sql_db,
            max_rows=settings.sql_max_rows,
            max_bytes=settings.tool_max_output_bytes,
            timeout_s=settings.sql_timeout_s,
        )
        tools.append(configure(query, concurrency_group="sql", timeout_s=settings.sql_timeout_s + 5))
    return tools


@asynccontextmanager
async def load_tools(settings: Settings) -> AsyncIterator[list[BaseTool]]:
    """The built-in tools plus, with ``AGENT_MCP_CONFIG``, the MCP servers' tools.

    The servers' sessions stay open inside the block, so build and run the graph there.
    """
    if settings.mcp_config is None:
        yield builtin_tools(settings)
        return
    async with mcp_servers().open_mcp_servers(settings.mcp_config) as servers:
        yield distinct([*builtin_tools(settings), *servers.tools])


def mcp_servers():
    """``agent_ng.tools.mcp_servers``, or a clear error when the mcp extra is not installed."""
    try:
        from agent_ng.tools import mcp_servers
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
