"""``agent-ng tools``: every tool the agent would have, where it comes from and how it is run.

    agent-ng tools

One row per tool: its source (``built-in`` or ``mcp:<server>``), its engine settings
(``ToolSpec``: timeout, cache, concurrency group, approval) and its recent timings, then one
line per MCP server that did not start. MCP servers are started as a run would start them.
"""

from __future__ import annotations

import asyncio

import typer
from langchain_core.tools import BaseTool
from rich.console import Console
from rich.table import Table

from agent_ng.graph.toolset import builtin_tools
from agent_ng.settings import Settings
from agent_ng.tools.registry import source_of, spec_of


def list_tools() -> None:
    """List every tool: its source, its settings and its recent timings."""
    settings = Settings()
    try:
        (tools, failures), timings = asyncio.run(listing(settings))
    except ValueError as e:  # an unusable AGENT_MCP_CONFIG (McpConfigError)
        typer.echo(f"agent-ng: {e}", err=True)
        raise typer.Exit(2) from e
    console = Console()
    console.print(table(tools, timings))
    for server, error in failures.items():
        console.print(f"mcp:{server}: {error}; its tools are not listed.", style="red", markup=False)


async def listing(settings: Settings) -> tuple[tuple[list[BaseTool], dict[str, str]], dict[str, str]]:
    """The inventory and the timings, in one event loop."""
    return await inventory(settings), await recent_timings(settings)


async def inventory(settings: Settings) -> tuple[list[BaseTool], dict[str, str]]:
    """The tools a run would get, and the MCP servers that did not start (with why)."""
    if settings.mcp_config is None:
        return builtin_tools(settings), {}
    from agent_ng.tools.mcp_servers import open_mcp_servers

    async with open_mcp_servers(settings.mcp_config) as servers:
        return [*builtin_tools(settings), *servers.tools], servers.failures


async def recent_timings(settings: Settings) -> dict[str, str]:
    """``p50 / p95 / max`` per tool from the tool engine's stats store; empty without it.

    The hook for the tool engine's store (``agent_ng.engine.store`` and ``agent_ng.engine.tool_stats``):
    where those modules are not installed yet, there are no timings to show.
    """
    try:
        from agent_ng.engine.stores import open_tool_store
        from agent_ng.engine.tool_stats import tool_stats
    except ImportError:
        return {}
    async with open_tool_store(settings.cache_url) as store:
        return {
            s.tool: " / ".join(seconds(v) for v in (s.p50_s, s.p95_s, s.max_s)) + f" ({s.calls} calls)"
            for s in await tool_stats(store)
        }


def table(tools: list[BaseTool], timings: dict[str, str]) -> Table:
    """One row per tool: its source, its ``ToolSpec`` settings and its timings."""
    table = Table(title="Tools", caption="timings: p50 / p95 / max of recent runs")
    for column in ("tool", "source", "timeout", "cache", "group", "approval", "timings"):
        table.add_column(column, no_wrap=column in ("tool", "source"))
    for tool in tools:
        spec = spec_of(tool)
        table.add_row(
            tool.name,
            source_of(tool),
            seconds(spec.timeout_s) if spec.timeout_s else "default",
            (f"yes, {seconds(spec.cache_ttl_s)}" if spec.cache_ttl_s else "yes") if spec.cacheable else "no",
            spec.concurrency_group or "-",
            "required" if spec.requires_approval else "-",
            timings.get(tool.name, "-"),
        )
    return table


def seconds(value: float | None) -> str:
    """Seconds to three significant digits; ``-`` when unset."""
    return "-" if value is None else f"{value:.3g} s"
