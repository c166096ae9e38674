"""A change's before/after under ``bench scaling``'s load: one of its sides at fixed levels, this
install against other checkouts of agent-ng, in one run.

    python -m agent_ng.bench.scaling_ab /tmp/before --side "--workers 2" --levels 330,366 --rounds 6

Each checkout (its code on this environment's packages, ``bench.service.importable``) and this
install serve the side's deployment side by side, on stores of their own; every round runs each
level once per tree, the trees' order rotating from round to round, so a drifting machine hits
them alike. A scaling search's K is good to its bisection's resolution (12%); a fixed level
probed in alternating rounds shows a change of a few percent, and how far the rounds spread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent_ng.bench import scaling
from agent_ng.bench.measure import Result, Table, median, rotated
from agent_ng.bench.replicas import own_redis_prefix
from agent_ng.bench.service import importable, revision

NAME = "scaling_ab"
FIGURES = (("tokens_per_s", "tokens/s", 0), ("gap_p99_ms", "gap p99 (ms)", 1), ("ttft_p99_ms", "TTFT p99 (ms)", 0),
           ("server_us_per_token", "server CPU per token (us)", 0), ("server_cores", "server CPU (cores)", 2),
           ("machine_cores", "machine CPU (cores)", 2))


def spread(values: list[float], digits: int) -> str:
    """The median, and the range of the rounds."""
    def shown(value: float) -> str:
        return f"{round(value, digits or None):,}"
    return f"{shown(median(values))} ({shown(min(values))}–{shown(max(values))})"


async def run(side_name: str, levels: list[int], rounds: int, checkouts: list[Path], size: str = "full") -> Result:
    side = next(s for s in scaling.SIDES if s.name == side_name)
    spec = scaling.SIZES[size]
    with tempfile.TemporaryDirectory(prefix="bench-scaling-ab-") as scratch:
        async with AsyncExitStack() as stack:
            redis, prefix = await stack.enter_async_context(own_redis_prefix())
            redis_pid = await scaling.redis_process(redis)
            env = scaling.side_env()
            trees: dict[str, scaling.Target] = {}
            for i, checkout in enumerate([None, *checkouts]):
                tree_env = env | {"AGENT_REDIS_PREFIX": f"{prefix}{i}:"}
                name = "this install"
                if checkout is not None:
                    folder = Path(scratch, f"tree-{i}")
                    folder.mkdir()
                    tree_env["PYTHONPATH"] = os.pathsep.join(
                        [str(importable(checkout, folder)), *filter(None, [env.get("PYTHONPATH")])]
                    )
                    name = f"{checkout.name} ({revision(checkout)})"
                trees[name] = await stack.enter_async_context(
                    scaling.deployed(side, spec.tokens, tree_env, Path(scratch, f"side-{i}"))
                )
            warmup = replace(spec, window_s=0.1)
            await asyncio.gather(*(scaling.level(t, scaling.WARMUP_K, warmup, redis_pid) for t in trees.values()))
            probes: list[dict[str, Any]] = []
            for r in range(rounds):
                for k in levels:
                    for name in rotated(list(trees), r):
                        probes.append({"tree": name, **await scaling.level(trees[name], k, spec, redis_pid)})
    rows = [
        [name, k, *[spread([p[key] for p in mine], digits) for key, _, digits in FIGURES],
         sum(not p["passed"] for p in mine)]
        for k in levels
        for name in trees
        if (mine := [p for p in probes if p["tree"] == name and p["k"] == k])
    ]
    table = Table(
        f"{side.name}: K streams of {spec.tokens} tokens at {scaling.RATE:g} tokens/s, {rounds} rounds per tree "
        f"and level, trees alternating; median (range)",
        ["tree", "K", *[title for _, title, _ in FIGURES], "rounds failed"],
        rows,
        note=f"A round fails as a scaling probe does: gap p99 over {scaling.GAP_BOUND_MS:g} ms, first token's "
        f"p99 over {scaling.TTFT_BOUND_MS:,.0f} ms, or an error.",
    )
    return Result(NAME, size, [table], {"side": side.name, "levels": levels, "trees": list(trees), "probes": probes})


if __name__ == "__main__":
    from agent_ng.bench.report import show

    parser = argparse.ArgumentParser(prog="python -m agent_ng.bench.scaling_ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", type=Path, nargs="+", help="other checkouts of agent-ng, each a tree of its own")
    parser.add_argument("--side", default=scaling.BASELINE, choices=[s.name for s in scaling.SIDES])
    parser.add_argument("--levels", required=True, help="K values, comma-separated")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    show(asyncio.run(run(args.side, [int(k) for k in args.levels.split(",")], args.rounds, args.checkouts)))
