"""Where the time goes: profile one of our paths with pyinstrument (or cProfile without it).

    python -m agent_ng.bench.profile streaming    # our AgentEvent stream, 5,000 tokens, GC off
    python -m agent_ng.bench.profile parallel     # ours at limit 16, 16 instant tools, in-memory saver
    python -m agent_ng.bench.profile parallel --peer   # the same work through create_agent
    python -m agent_ng.bench.profile service --k 300   # the server (its own process) under 300 streams
    python -m agent_ng.bench.profile service --k 300 --tokens 1   # ... each one token: a run's fixed cost

The tools take no time here, so what is left is the framework's own work per token or per
tool task. ``service`` samples the server process of ``agent_ng.bench.service`` with py-spy (from the
outside, idle time left out) while the load client, a process of its own, runs one level.
The findings in bench/README.md come from these.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.bench import service
from agent_ng.bench.models import TokenModel
from agent_ng.bench.parallel import PEER, await_tool, sides
from agent_ng.bench.paths import paths

REPO = Path(__file__).resolve().parents[1]


def target(name: str, peer: bool) -> Callable[[], Awaitable[Any]]:
    if name == "streaming":
        return paths(TokenModel(tokens=5000))["create_agent, messages" if peer else "ours, AgentEvent stream"]
    side = PEER if peer else "ours, limit 16"
    return sides(16, await_tool(0.0), (16,), InMemorySaver())[side][0]


def owner(path: str) -> str:
    """Whose code a frame runs: ours, a package's, or a standard library module's."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    file = Path(path)
    if REPO in file.parents:
        return "ours (agent-ng)"
    return f"stdlib {file.stem if file.parent.name.startswith('python3') else file.parent.name}"


def read_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw format: one ``frame;frame;...;leaf count`` line per distinct stack."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_path(frame: str) -> str:
    """``function (path:line)`` -> path."""
    return frame.rpartition(" (")[2].rpartition(":")[0]


def short(frame: str) -> str:
    """``function (path:line)`` -> ``function (path from its package or the repository)``."""
    function, _, _ = frame.rpartition(" (")
    path = frame_path(frame)
    for root in ("site-packages/", f"{REPO}/", f"python{sys.version_info.major}.{sys.version_info.minor}/"):
        path = path.split(root, 1)[-1]
    return f"{function} ({path})"


def report(stacks: list[tuple[list[str], int]], top: int = 20) -> str:
    """Self time by owner, then the functions with the most self time, as shares of samples."""
    total = sum(count for _, count in stacks)
    owners: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        owners[owner(frame_path(frames[-1]))] += count
        leaves[short(frames[-1])] += count
    lines = [f"{total} samples of the server process while it was busy (py-spy, idle left out)"]
    for title, counts in (("Self time by owner:", owners), ("Functions with the most self time:", leaves)):
        lines += ["", title, *(f"  {n / total:6.1%}  {name}" for name, n in counts.most_common(top))]
    return "\n".join(lines)


async def profile_service(k: int, tokens: int, keep: Path | None = None, checkout: Path | None = None) -> None:
    """Sample the server process (of another ``checkout``, if given) with py-spy while the load
    client runs one level; ``keep`` gets py-spy's raw stacks (``flamegraph.pl`` and speedscope
    read them)."""
    spy_bin = Path(sys.executable).parent / "py-spy"
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch, "server.txt")
        async with service.ours(tokens, service.RATE, checkout) as server:
            await service.level(server, 2, tokens)
            spy = await asyncio.create_subprocess_exec(
                str(spy_bin), "record", "--pid", str(server.pid), "--rate", "500", "--format",
                "raw", "--full-filenames", "--nonblocking", "--output", str(raw),
                stdout=asyncio.subprocess.PIPE,
            )
            await spy.stdout.readline()  # "py-spy> Sampling process ...": attached
            row = await service.level(server, k, tokens)
            spy.send_signal(signal.SIGINT)
            await spy.communicate()
        text = raw.read_text()
    if keep is not None:
        keep.write_text(text)
    print(report(read_raw(text)))
    shown = {key: round(value, 3) if isinstance(value, float) else value for key, value in row.items()}
    print(f"\nLoad level (K = {k}, {tokens} tokens per stream): {shown}")


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
    parser = argparse.ArgumentParser(prog="python -m agent_ng.bench.profile", description=__doc__)
    parser.add_argument("name", choices=["streaming", "parallel", "service"])
    parser.add_argument("--peer", action="store_true", help="profile create_agent instead")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--k", type=int, default=300, help="service: concurrent streams")
    parser.add_argument("--tokens", type=int, default=40, help="service: tokens per stream")
    parser.add_argument("--raw", type=Path, help="service: write py-spy's raw stacks here")
    parser.add_argument("--side", type=Path, help="service: profile this checkout of agent-ng instead")
    args = parser.parse_args()
    if args.name == "service":
        asyncio.run(profile_service(args.k, args.tokens, args.raw, args.side))
    else:
        asyncio.run(profile(args.name, args.peer, args.runs))
