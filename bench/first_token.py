"""Benchmark 2: time to first token on each path, over a model with a fixed latency.

The model's first chunk comes ``delay`` after the call (a sleep in the bench model simulates
the model's latency); each path's time to its first text chunk minus the raw model's is what
the path costs before the person sees anything. Our graph also runs with a SQLite
checkpointer, as the CLI does, because the input checkpoint is written before the model runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

from agent_ng.bench.measure import Result, Table, median
from agent_ng.bench.models import TokenModel
from agent_ng.bench.paths import paths
from agent_ng.persistence.checkpoint import open_checkpointer

NAME = "first_token"
RAW = "raw model.astream"


@dataclass(frozen=True)
class Size:
    delay_s: float
    tokens: int
    rounds: int


SIZES = {"full": Size(0.05, 20, 20), "smoke": Size(0.005, 3, 2)}


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    model = TokenModel(tokens=spec.tokens, first_delay_s=spec.delay_s)
    with tempfile.TemporaryDirectory() as tmp:
        async with open_checkpointer(f"sqlite:///{Path(tmp) / 'ttft.db'}") as saver:
            sides = paths(model)
            sides["ours + SQLite, AgentEvent stream"] = paths(model, saver)[
                "ours, AgentEvent stream"
            ]
            names = list(sides)
            for read in sides.values():
                await read()
            ttft: dict[str, list[float]] = {name: [] for name in names}
            for r in range(spec.rounds):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    start = perf_counter()
                    _, first = await sides[name]()
                    ttft[name].append(first - start)
    raw = median(ttft[RAW])
    table = Table(
        f"Time to first token, model latency {spec.delay_s * 1e3:g} ms (median of {spec.rounds})",
        ["path", "first token (ms)", "overhead over raw (ms)", "p90 overhead (ms)"],
        [
            [
                name,
                round(median(ttft[name]) * 1e3, 2),
                round((median(ttft[name]) - raw) * 1e3, 2),
                round((sorted(ttft[name])[int(0.9 * (len(ttft[name]) - 1))] - raw) * 1e3, 2),
            ]
            for name in names
        ],
    )
    data = {
        "delay_s": spec.delay_s,
        "paths": names,
        "ttft_ms": {name: median(v) * 1e3 for name, v in ttft.items()},
        "overhead_ms": {name: (median(v) - raw) * 1e3 for name, v in ttft.items()},
        "samples_ms": {name: [x * 1e3 for x in v] for name, v in ttft.items()},
    }
    return Result(NAME, size, [table], data)
