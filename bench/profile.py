"""Where the time goes: profile one of our paths with pyinstrument (or cProfile without it).

    python -m bench.profile streaming    # our AgentEvent stream, 5,000 tokens, GC off
    python -m bench.profile parallel     # ours at limit 16, 16 instant tools, in-memory saver
    python -m bench.profile parallel --peer   # the same work through create_agent
    python -m bench.profile service --k 300   # the server (its own process) under 300 streams
    python -m bench.profile service --k 300 --tokens 1   # ... each one token: a run's fixed cost

The tools take no time here, so what is left is the framework's own work per token or per
tool task. ``service`` profiles the server process of ``bench.service`` (pyinstrument inside it,
the load client in a process of its own) for one load level. The findings in bench/README.md
come from these.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from bench import service
from bench.models import TokenModel
from bench.parallel import PEER, await_tool, sides
from bench.paths import paths


def target(name: str, peer: bool) -> Callable[[], Awaitable[Any]]:
    if name == "streaming":
        return paths(TokenModel(tokens=5000))["create_agent, messages" if peer else "ours, AgentEvent stream"]
    side = PEER if peer else "ours, limit 16"
    return sides(16, await_tool(0.0), (16,), InMemorySaver())[side][0]


async def profile_service(k: int, tokens: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch, "server-profile.txt")
        async with service.ours(tokens, service.RATE, profile=report) as server:
            await service.level(server, 2, tokens)
            row = await service.level(server, k, tokens)
        print(report.read_text())
    print({key: round(value, 3) if isinstance(value, float) else value for key, value in row.items()})


async def profile(name: str, peer: bool, runs: int) -> None:
    run = target(name, peer)
    await run()
    gc.disable()
    try:
        from pyinstrument import Profiler
    except ImportError:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs):
            await run()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        return
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(runs):
        await run()
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("name", choices=["streaming", "parallel", "service"])
    parser.add_argument("--peer", action="store_true", help="profile create_agent instead")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--k", type=int, default=300, help="service: concurrent streams")
    parser.add_argument("--tokens", type=int, default=40, help="service: tokens per stream")
    args = parser.parse_args()
    if args.name == "service":
        asyncio.run(profile_service(args.k, args.tokens))
    else:
        asyncio.run(profile(args.name, args.peer, args.runs))
