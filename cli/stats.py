"""``agent-ng stats``: what each tool has done, across runs, read from the tool store.

agent-ng stats                 # a table: calls, errors, timeouts, cache hits, p50/p95/max
agent-ng stats --prometheus    # the same in Prometheus' text format
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent_ng.engine.stores import open_tool_store
from agent_ng.engine.tool_stats import ToolStats, prometheus_text, tool_stats
from agent_ng.settings import Settings


def stats(
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Print Prometheus' text format instead.")
    ] = False,
) -> None:
    """Per tool: calls, errors, timeouts, cache hits and p50/p95/max duration, across runs."""
    settings = Settings()
    rows = asyncio.run(load(settings.cache_url))
    if prometheus:
        typer.echo(prometheus_text(rows), nl=False)
    elif not rows:
        typer.echo(f"No tool calls recorded yet in {settings.cache_url}.")
    else:
        Console().print(table(rows, settings.cache_url))


async def load(url: str) -> list[ToolStats]:
    """Every tool's stats from the store at ``url``."""
    async with open_tool_store(url) as store:
        return await tool_stats(store)


def table(rows: list[ToolStats], source: str) -> Table:
    """The stats as a table, its caption naming the store they came from."""
    table = Table(
        title="Tool calls",
        caption=f"from {source}\ncached calls did not run; durations: recent successful runs",
    )
    table.add_column("tool", no_wrap=True)
    for name in ("calls", "errors", "timeouts", "cached", "p50", "p95", "max"):
        table.add_column(name, justify="right")
    for s in rows:
        table.add_row(
            s.tool,
            *(str(n) for n in (s.calls, s.errors, s.timeouts, s.cache_hits)),
            *(seconds(v) for v in (s.p50_s, s.p95_s, s.max_s)),
        )
    return table


def seconds(value: float | None) -> str:
    """Three significant digits: the histogram's own precision."""
    if value is None:
        return "-"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
