"""A real MCP server for the tests, built with the ``mcp`` package's FastMCP.

    python tests/mcp_server.py                # stdio
    python tests/mcp_server.py --http PORT    # streamable HTTP on 127.0.0.1:PORT/mcp

``gather`` proves that calls overlap without timing luck: each call reports progress on
arrival, then waits until ``parties`` calls of its ``group`` are inside the server at once, so
two calls can only both finish if they ran concurrently. ``fail`` returns an MCP error result;
``exit_now`` kills the server in the middle of a call; ``echo`` is the cheapest possible call.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import defaultdict

from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("test-tools", log_level="WARNING")

_arrived: defaultdict[str, int] = defaultdict(int)
_all_in: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


@server.tool()
async def gather(label: str, group: str, parties: int, ctx: Context) -> str:
    """Arrive, report it, and return once ``parties`` calls of ``group`` are all running."""
    _arrived[group] += 1
    await ctx.report_progress(1, 2, f"{label} arrived")
    if _arrived[group] >= parties:
        _all_in[group].set()
    await _all_in[group].wait()
    await ctx.report_progress(2, 2, f"{label} done")
    return f"{label} done"


@server.tool()
async def fail(reason: str) -> str:
    """Always fails with ``reason``."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
def echo(text: str) -> str:
    """Return ``text``."""
    return text


@server.tool()
async def exit_now(ctx: Context) -> str:
    """Kill the server process in the middle of this call."""
    await ctx.report_progress(0.5, 1, "about to exit")
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("stdio")
