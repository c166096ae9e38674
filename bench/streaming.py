"""Benchmark 1: what streaming costs per token, on each path, under each GC setting.

A model streams N chunks as fast as it can (``TokenModel``, no sleeps); each path reads the
whole answer, the last one through our SSE endpoint over loopback HTTP (server and client both
in this process, so its CPU is both ends'). Reported: microseconds per token (wall and CPU) and the difference to the raw
``model.astream``. The bar (issue 16): our ``AgentEvent`` stream's overhead over raw is at most
half the bare LangGraph graph's in messages mode, at every length; the same events with the
tokens taken from messages mode (as before the token tap) are timed beside it. Swept over
1,000..10,000 tokens and four collector settings, because LangChain's per-token cost grows
with long answers when the collector is on.
"""

from __future__ import annotations

import gc
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from agent_ng.bench.measure import Result, Table, Timing, median, timed
from agent_ng.bench.models import TokenModel
from agent_ng.bench.paths import SSE, VIA_MESSAGES, paths, sse_path
from agent_ng.collector import THRESHOLDS, tune_collector

NAME = "streaming"
RAW = "raw model.astream"
BARE = "bare graph, messages"
OURS = "ours, AgentEvent stream"
SWEEP_PATHS = (RAW, BARE, "create_agent, messages", VIA_MESSAGES, OURS)
"""The paths timed under every GC setting; the others only under the default."""
BAR = 0.5
"""Our overhead over raw, at most this share of the bare graph's."""
HEADLINE_TOKENS = 5000
DEFAULT_THRESHOLD = (700, 10, 10)


@dataclass(frozen=True)
class Size:
    tokens: tuple[int, ...]
    rounds: int
    modes: tuple[str, ...]


SIZES = {
    "full": Size((1000, 2000, 5000, 10_000), 5, ("default", "freeze", "agent-ng", "off")),
    "smoke": Size((50,), 1, ("default", "freeze")),
}


def set_gc(mode: str) -> None:
    """``default``: Python's; ``freeze``: ``gc.freeze()`` after start-up; ``agent-ng``: what the
    command does (``agent_ng.collector``: freeze and higher thresholds); ``off``: ``gc.disable()``
    (the reference, not advice)."""
    gc.unfreeze()
    gc.enable()
    gc.set_threshold(*DEFAULT_THRESHOLD)
    gc.collect()
    if mode == "freeze":
        gc.freeze()
    elif mode == "agent-ng":
        tune_collector()
    elif mode == "off":
        gc.disable()


async def run(size: str = "full") -> Result:
    async with AsyncExitStack() as servers:
        spec = SIZES[size]
        models = {n: TokenModel(tokens=n) for n in spec.tokens}
        sides = {n: paths(models[n]) for n in spec.tokens}
        for n in spec.tokens:
            sides[n][SSE] = await servers.enter_async_context(sse_path(models[n]))
        return await measure(spec, size, sides)


async def measure(spec: Size, size: str, sides: dict[int, dict]) -> Result:
    names = list(sides[spec.tokens[0]])
    for n in spec.tokens:
        for read in sides[n].values():
            await read()
    samples: dict[tuple[str, int, str], list[Timing]] = {}
    counts: dict[str, int] = {}
    try:
        for r in range(spec.rounds):
            for mode in spec.modes:
                set_gc(mode)
                chosen = names if mode == "default" else [n for n in names if n in SWEEP_PATHS]
                for n in spec.tokens:
                    for name in chosen[r % len(chosen):] + chosen[: r % len(chosen)]:
                        timing, (seen, _) = await timed(sides[n][name])
                        samples.setdefault((mode, n, name), []).append(timing)
                        counts[f"{name}@{n}"] = seen
    finally:
        set_gc("default")

    def us(mode: str, n: int, name: str, attr: str = "cpu_s") -> float:
        return median([getattr(t, attr) for t in samples[(mode, n, name)]]) / n * 1e6

    def share(mode: str, n: int) -> float:
        """Our overhead over raw as a share of the bare graph's."""
        return (us(mode, n, OURS) - us(mode, n, RAW)) / (us(mode, n, BARE) - us(mode, n, RAW))

    head_n = HEADLINE_TOKENS if HEADLINE_TOKENS in spec.tokens else spec.tokens[-1]

    def gc_ms(mode: str, n: int, name: str) -> float:
        return median([t.gc_s for t in samples[(mode, n, name)]]) * 1e3

    head = Table(
        f"Streaming cost per token: {head_n:,} tokens, default GC, median of {spec.rounds} "
        f"(bar: AgentEvent stream's overhead <= {BAR:g} x the bare graph's)",
        ["path", "us/token CPU", "x raw", "+us over raw", "us/token wall", "GC ms/run"],
        [
            [
                name,
                round(us("default", head_n, name), 1),
                round(us("default", head_n, name) / us("default", head_n, RAW), 2),
                round(us("default", head_n, name) - us("default", head_n, RAW), 1),
                round(us("default", head_n, name, "wall_s"), 1),
                round(gc_ms("default", head_n, name), 1),
            ]
            for name in names
        ],
        note="CPU = process time: on a shared machine it leaves out the time the process waited "
        "for a core; wall is in the JSON too.",
    )
    sweep_names = [n for n in names if n in SWEEP_PATHS]
    sweep = Table(
        "us per token (CPU, median) by answer length and GC setting; GC ms = ours per run",
        ["GC", "tokens", *sweep_names, "ours - raw", "(ours - raw) / (bare - raw)", "GC ms (raw / ours)"],
        [
            [
                mode,
                n,
                *[round(us(mode, n, name), 1) for name in sweep_names],
                round(us(mode, n, OURS) - us(mode, n, RAW), 1),
                round(share(mode, n), 2),
                f"{gc_ms(mode, n, RAW):.0f} / {gc_ms(mode, n, OURS):.0f}",
            ]
            for mode in spec.modes
            for n in spec.tokens
        ],
        note=f"freeze = gc.freeze() after start-up; agent-ng = freeze and gc.set_threshold{THRESHOLDS} "
        "(agent_ng.collector, what the agent-ng command does); off = gc.disable(), the reference.",
    )
    data: dict[str, Any] = {
        "tokens": list(spec.tokens),
        "modes": list(spec.modes),
        "paths": names,
        "bar": BAR,
        "share_of_bare": {mode: {str(n): share(mode, n) for n in spec.tokens} for mode in spec.modes},
        "us_per_token_cpu": {
            mode: {
                str(n): {name: us(mode, n, name) for name in names if (mode, n, name) in samples}
                for n in spec.tokens
            }
            for mode in spec.modes
        },
        "ours_over_raw_us": us("default", head_n, OURS) - us("default", head_n, RAW),
        "ours_over_raw_us_wall": us("default", head_n, OURS, "wall_s")
        - us("default", head_n, RAW, "wall_s"),
        "chunks_seen": counts,
        "samples": {
            f"{mode}/{n}/{name}": [[t.wall_s, t.cpu_s, t.gc_s] for t in ts]
            for (mode, n, name), ts in samples.items()
        },
    }
    return Result(NAME, size, [head, sweep], data)
