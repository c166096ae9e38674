"""Benchmark 7: how far off ``eta_s`` is, against what the calls really took.

A mixed workload through the real graph and the engine's in-memory tool store: tools whose
durations vary in different ways (steady, spread out, mostly quick with rare slow calls),
drawn with a fixed seed and simulated with awaits (the only sleeps are here, in bench/). Each
call reports progress at 25, 50 and 75%, its quarters of uneven length, so the pace is a
guess as it would be for a real tool. Calls run one turn each, the tools interleaved at random.

Estimators, each against the truth it predicts:

- ``tool_start``: the tool's median recent duration (``agent_ng.engine.eta``) against the call's duration;
- ``progress p%``: the blend ``agent_ng.tools.progress.remaining_s`` reported at p% against the time the
  call really had left; beside it, from the same reports, pace alone and history alone, so the
  table shows what the blend buys.

The truth is the duration the engine itself recorded for the call (the store's newest entry),
the same number the next estimate reads.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from statistics import fmean

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from agent_ng.bench.measure import Result, Table
from agent_ng.bench.models import ToolTurnModel
from agent_ng.bench.paths import bench_settings
from agent_ng.engine.store import MemoryToolStore
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.tools import progress
from agent_ng.tools.progress import remaining_s

NAME = "eta"
SEED = 6
FRACTIONS = (0.25, 0.5, 0.75)
ESTIMATORS = ["tool_start (history median)"] + [
    f"progress {f:.0%}, {label}"
    for f in FRACTIONS
    for label in ("blend (reported)", "pace only", "history only")
]


@dataclass(frozen=True)
class Size:
    calls_per_tool: int
    scale_s: float
    """The typical duration; every tool's draws are multiples of it."""


SIZES = {"full": Size(30, 0.2), "smoke": Size(5, 0.005)}


def draws(rng: random.Random, kind: str, scale: float) -> float:
    """One call's duration for a tool of ``kind``."""
    if kind == "steady":
        return scale * rng.uniform(0.9, 1.1)
    if kind == "spread":
        return scale * rng.lognormvariate(0, 0.6)
    if kind == "rare slow":
        return scale * (8.0 if rng.random() < 0.1 else rng.uniform(0.4, 0.6))
    return scale * rng.uniform(0.2, 3.0)  # "input-dependent": the cost follows the argument


KINDS = ("steady", "spread", "rare slow", "input-dependent")


def sleeper(name: str, durations: list[float], rng: random.Random):
    """An async tool that takes the next drawn duration, in four uneven quarters."""
    pending = iter(durations)

    @tool(name)
    async def work(i: int) -> str:
        """Works for a while, reporting each quarter."""
        total = next(pending)
        weights = [rng.uniform(0.6, 1.4) for _ in range(4)]
        for k, w in enumerate(weights):
            await asyncio.sleep(total * w / sum(weights))
            if k < 3:
                progress.report((k + 1) / 4, f"quarter {k + 1}")
        return "done"

    return work


def slug(kind: str) -> str:
    return kind.replace(" ", "_").replace("-", "_")


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    rng = random.Random(SEED)
    plan = {slug(k): [draws(rng, k, spec.scale_s) for _ in range(spec.calls_per_tool)] for k in KINDS}
    tools = [sleeper(name, plan[name], rng) for name in plan]
    order = [name for name in plan for _ in range(spec.calls_per_tool)]
    rng.shuffle(order)
    store = MemoryToolStore()
    graphs = {
        name: build_graph(
            ToolTurnModel(tool=name, calls=1), tools, settings=bench_settings(cache_url="memory://"),
            tool_store=store,
        )
        for name in plan
    }
    samples: list[dict] = []
    for n, name in enumerate(order):
        start_eta, reports = None, []
        async for event in stream(
            graphs[name], {"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": f"e{n}"}}
        ):
            if event.type == "tool_start":
                start_eta = event.eta_s
            elif event.type == "tool_progress":
                reports.append((event.progress, event.elapsed_s, event.eta_s))
        actual = (await store.durations(name, 1))[0]
        samples.append({"tool": name, "actual_s": actual, "start_eta_s": start_eta, "reports": reports})

    return Result(NAME, size, tables(samples, spec), data(samples, spec))


def errors(samples: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Per estimator: (estimate, truth) pairs where it gave an estimate."""
    pairs: dict[str, list[tuple[float, float]]] = {"tool_start (history median)": []}
    for s in samples:
        if s["start_eta_s"] is not None:
            pairs["tool_start (history median)"].append((s["start_eta_s"], s["actual_s"]))
        for fraction, elapsed, eta in s["reports"]:
            left = max(s["actual_s"] - elapsed, 0.0)
            history = s["start_eta_s"]
            for label, guess in (
                ("blend (reported)", eta),
                ("pace only", remaining_s(fraction, elapsed, None)),
                ("history only", remaining_s(None, elapsed, history)),
            ):
                if guess is not None:
                    pairs.setdefault(f"progress {fraction:.0%}, {label}", []).append((guess, left))
    return pairs


def summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
    abs_err = [abs(g - t) for g, t in pairs]
    return {
        "n": len(pairs),
        "mae_ms": fmean(abs_err) * 1e3,
        "relative": sum(abs_err) / max(sum(t for _, t in pairs), 1e-9),
        "mean_truth_ms": fmean(t for _, t in pairs) * 1e3,
    }


def tables(samples: list[dict], spec: Size) -> list[Table]:
    overall = {k: summary(v) for k, v in errors(samples).items() if v}
    per_tool = {
        name: {k: summary(v) for k, v in errors([s for s in samples if s["tool"] == name]).items() if v}
        for name in dict.fromkeys(s["tool"] for s in samples)
    }
    keys = ["tool_start (history median)"] + [
        f"progress {f:.0%}, blend (reported)" for f in FRACTIONS
    ]
    return [
        Table(
            f"ETA error, mixed workload: {len(samples)} calls of 4 tools (typical {spec.scale_s * 1e3:g} ms), seed {SEED}",
            ["estimator", "estimates", "mean truth (ms)", "MAE (ms)", "relative error"],
            [
                [k, v["n"], round(v["mean_truth_ms"], 1), round(v["mae_ms"], 1), round(v["relative"], 3)]
                for k, v in sorted(overall.items(), key=lambda kv: ESTIMATORS.index(kv[0]))
            ],
        ),
        Table(
            "ETA relative error (sum |error| / sum truth) per tool",
            ["estimator", *per_tool],
            [
                [k, *(round(per_tool[t][k]["relative"], 3) if k in per_tool[t] else "-" for t in per_tool)]
                for k in keys
            ],
        ),
    ]


def data(samples: list[dict], spec: Size) -> dict:
    return {
        "seed": SEED,
        "scale_s": spec.scale_s,
        "calls": len(samples),
        "estimators": {k: summary(v) for k, v in errors(samples).items() if v},
        "samples": samples,
    }
