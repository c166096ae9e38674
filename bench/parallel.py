"""Benchmark 3: one model turn asks for N tools; how close to ideal is the wall time?

Tools of two kinds: ``await`` (each ``await asyncio.sleep(t)``, a stand-in for I/O) and ``cpu``
(a sync tool hashing with PBKDF2, which releases the GIL, so two cores can really run two).
Sides, alternated in one process: the sequential baseline (the tools awaited one after
another), our graph at max_concurrency 1/3/8/16 read as the ``AgentEvent`` stream with a SQLite
checkpointer (at the highest limit also with LangGraph's default durability, and without a
saver), and langchain's ``create_agent`` (same model and tools, read with
``stream_mode=["messages", "updates"]``) on LangGraph's own ``AsyncSqliteSaver`` with our
saver's settings, and without a saver. At the highest limit ours runs once more with the SQLite
tool store too (recorded results, counts, durations in a file: what ``open_agent`` gives by
default; the other sides keep them in memory). Every run with a saver is on a fresh thread. Wall time
is the whole run: model turn, tools, model turn. Ideal: await tools ``t * ceil(N / limit)``;
cpu tools the sequential run's wall time over ``min(N, limit, cores)`` (the work measured,
spread over the cores it may use).
Efficiency = ideal / actual. The bar: >= 0.98 at N = 16 with checkpointing.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agent_ng.bench.measure import Result, Table, median, rotated, save_figure
from agent_ng.bench.models import ToolTurnModel
from agent_ng.bench.paths import bench_settings
from agent_ng.engine.store import ToolStore
from agent_ng.engine.stores import open_tool_store
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import SQLITE_BUSY_TIMEOUT_MS, SQLITE_SYNCHRONOUS, open_checkpointer

NAME = "parallel"
SEQUENTIAL = "sequential"
PEER = "create_agent"
UNSAVED = ", no saver"
BAR = 0.98


@dataclass(frozen=True)
class Size:
    ns: tuple[int, ...]
    limits: tuple[int, ...]
    await_s: float
    cpu_s: float
    rounds: int
    kinds: tuple[str, ...] = ("await", "cpu")


SIZES = {
    "full": Size((1, 2, 4, 8, 16), (1, 3, 8, 16), 0.2, 0.05, 4),
    "smoke": Size((1, 2), (1, 2), 0.01, 0.005, 1),
    "n16": Size((1, 16), (16,), 0.2, 0.05, 15, ("await",)),
}
"""``n16``: the await-bound tools at N = 16 alone (and N = 1 for the CPU per extra task), more
rounds: ``python -m agent_ng.bench.parallel n16``, e.g. to compare two trees back to back."""


def await_tool(seconds: float) -> BaseTool:
    @tool
    async def work(i: int) -> str:
        """Wait like an I/O-bound tool."""
        await asyncio.sleep(seconds)
        return f"done {i}"

    return work


def pbkdf2_iterations(seconds: float) -> int:
    """Iterations of PBKDF2-SHA256 that take about ``seconds`` on this machine."""
    probe = 20_000
    start = time.perf_counter()
    hashlib.pbkdf2_hmac("sha256", b"agent-ng", b"bench", probe)
    return max(1, int(probe * seconds / (time.perf_counter() - start)))


def cpu_tool(iterations: int) -> BaseTool:
    @tool
    def work(i: int) -> str:
        """Hash like a CPU-bound tool (PBKDF2 releases the GIL)."""
        return hashlib.pbkdf2_hmac("sha256", b"agent-ng", str(i).encode(), iterations).hex()[:8]

    return work


@asynccontextmanager
async def langgraph_sqlite(path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    """LangGraph's own SQLite saver, as a ``create_agent`` user has it, with our saver's settings
    (WAL, ``synchronous``, busy timeout) on a file of its own."""
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        for pragma in (f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", f"synchronous={SQLITE_SYNCHRONOUS}"):
            async with saver.conn.execute(f"PRAGMA {pragma}"):
                pass
        yield saver


def ideal_s(kind: str, n: int, t: float, limit: int, sequential_s: float) -> float:
    if kind == "await":
        return t * math.ceil(n / limit)
    return sequential_s / min(n, limit, os.cpu_count() or 1)


Side = Callable[[], Awaitable[Any]]


def async_saves(limit: int) -> str:
    """Ours with LangGraph's default durability, as ``create_agent`` runs: the price of ours
    (``sync``: each step's checkpoint stored before the next step starts) shows against it."""
    return f"ours, limit {limit}, durability async"


def tool_stored(limit: int) -> str:
    """Ours with the SQLite tool store beside the SQLite saver, as deployed by default."""
    return f"ours, limit {limit}, SQLite tool store"


def sides(
    n: int,
    work: BaseTool,
    limits: tuple[int, ...],
    saver,
    peer_saver=None,
    tool_store: ToolStore | None = None,
) -> dict[str, tuple[Side, int]]:
    """Each side and its concurrency limit (n when unbounded): ours on ``saver``, ``PEER`` on
    ``peer_saver`` (default: the same), their ``UNSAVED`` twins without a checkpointer, and
    with ``tool_store`` ours on it too (``tool_stored``)."""
    from langchain.agents import create_agent

    model = ToolTurnModel(tool="work", calls=n)
    runs = iter(range(10**9))

    def fresh() -> tuple[dict, dict]:
        return (
            {"messages": [HumanMessage(f"run {n} tools")]},
            {"configurable": {"thread_id": f"parallel-{n}-{next(runs)}"}},
        )

    async def sequential() -> None:
        question = [HumanMessage(f"run {n} tools")]
        answer = await model.ainvoke(question)
        results = [await work.ainvoke(call) for call in answer.tool_calls]
        await model.ainvoke([*question, answer, *results])

    def ours(limit: int, durability: str = "sync", checkpointer=saver, store=None) -> Side:
        graph = build_graph(
            model, [work], checkpointer, bench_settings(max_concurrency=limit), tool_store=store
        )

        saving = {"durability": durability} if checkpointer else {}

        async def run() -> None:
            async for event in stream(graph, *fresh(), **saving):
                if event.type == "run_end" and event.status != "done":
                    raise RuntimeError(f"our run ended {event.status}: {event.error}")

        return run

    def create_agent_run(checkpointer) -> Side:
        peer = create_agent(model, [work], checkpointer=checkpointer)

        async def run() -> None:
            async for _ in peer.astream(*fresh(), stream_mode=["messages", "updates"]):
                pass

        return run

    top = limits[-1]
    return {
        SEQUENTIAL: (sequential, 1),
        **{f"ours, limit {k}": (ours(k), min(k, n)) for k in limits},
        async_saves(top): (ours(top, "async"), min(top, n)),
        f"ours, limit {top}{UNSAVED}": (ours(top, checkpointer=None), min(top, n)),
        **({tool_stored(top): (ours(top, store=tool_store), min(top, n))} if tool_store else {}),
        PEER: (create_agent_run(saver if peer_saver is None else peer_saver), n),
        f"{PEER}{UNSAVED}": (create_agent_run(None), n),
    }


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    makers = {
        "await": lambda: (await_tool(spec.await_s), spec.await_s),
        "cpu": lambda: (cpu_tool(pbkdf2_iterations(spec.cpu_s)), spec.cpu_s),
    }
    kinds = {kind: makers[kind]() for kind in spec.kinds}
    walls: dict[tuple[str, int, str], list[float]] = {}
    cpus: dict[tuple[str, int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_checkpointer(f"sqlite:///{Path(tmp) / 'parallel.db'}") as saver,
            langgraph_sqlite(Path(tmp) / "peer.db") as peer_saver,
            open_tool_store(f"sqlite:///{Path(tmp) / 'tools.db'}") as tool_store,
        ):
            table = {
                (kind, n): sides(n, work, spec.limits, saver, peer_saver, tool_store)
                for kind, (work, _) in kinds.items()
                for n in spec.ns
            }
            for kind in kinds:
                for side, _ in table[(kind, spec.ns[0])].values():
                    await side()
            for r in range(spec.rounds):
                for (kind, n), group in table.items():
                    for name in rotated(list(group), r):
                        start, cpu = time.perf_counter(), time.process_time()
                        await group[name][0]()
                        walls.setdefault((kind, n, name), []).append(time.perf_counter() - start)
                        cpus.setdefault((kind, n, name), []).append(time.process_time() - cpu)

    rows: list[dict[str, Any]] = []
    for (kind, n), group in table.items():
        t = kinds[kind][1]
        baseline = median(walls[(kind, n, SEQUENTIAL)])
        for name, (_, limit) in group.items():
            wall = median(walls[(kind, n, name)])
            ideal = ideal_s(kind, n, t, limit, baseline)
            rows.append(
                {
                    "kind": kind,
                    "n": n,
                    "side": name,
                    "wall_ms": wall * 1e3,
                    "ideal_ms": ideal * 1e3,
                    "speedup": baseline / wall,
                    "efficiency": ideal / wall,
                    "cpu_ms": median(cpus[(kind, n, name)]) * 1e3,
                    "samples_ms": [w * 1e3 for w in walls[(kind, n, name)]],
                }
            )
    tables = [
        Table(
            f"Parallel tools, {kind} ({kinds[kind][1] * 1e3:g} ms each): wall ms (efficiency, "
            f"speed-up over sequential), median of {spec.rounds}",
            ["side", *[f"N={n}" for n in spec.ns]],
            [
                [
                    name,
                    *[
                        f"{r['wall_ms']:.1f} ({r['efficiency']:.3f}, {r['speedup']:.2f}x)"
                        for n in spec.ns
                        for r in rows
                        if r["kind"] == kind and r["n"] == n and r["side"] == name
                    ],
                ]
                for name in table[(kind, spec.ns[0])]
            ],
            note="efficiency = ideal / actual; ideal = the sequential time spread over "
            f"min(N, limit, {os.cpu_count()} cores)" if kind == "cpu" else
            f"efficiency = ideal / actual; bar: ours >= {BAR} at N = 16 with checkpointing",
        )
        for kind in kinds
    ]
    tables.append(per_task_cpu(rows, spec))
    return Result(NAME, size, tables, {"ns": list(spec.ns), "limits": list(spec.limits), "rows": rows})


def per_task_cpu(rows: list[dict[str, Any]], spec: Size) -> Table:
    """CPU per run of the await-bound tools, and per extra tool task: the framework's own work."""
    lo, hi, limit = spec.ns[0], spec.ns[-1], spec.limits[-1]

    def cpu(side: str, n: int) -> float:
        return next(r["cpu_ms"] for r in rows if (r["kind"], r["n"], r["side"]) == ("await", n, side))

    return Table(
        f"CPU per run, await-bound tools (median of {spec.rounds})",
        ["side", f"CPU ms, N={lo}", f"CPU ms, N={hi}", "CPU ms per extra tool task"],
        [
            [side, round(cpu(side, lo), 2), round(cpu(side, hi), 2),
             round((cpu(side, hi) - cpu(side, lo)) / (hi - lo), 3)]
            for side in (SEQUENTIAL, f"ours, limit {limit}", async_saves(limit), tool_stored(limit),
                         f"ours, limit {limit}{UNSAVED}", PEER, f"{PEER}{UNSAVED}")
        ],
        note="CPU is process time; what a run costs on a quiet machine, whatever the load here.",
    )


def plot(result: Result, directory: Path) -> list[Path]:
    """Wall time and efficiency against N, one column per tool kind (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = result.data["rows"]
    kinds = sorted({r["kind"] for r in rows})
    fig, axes = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 8), squeeze=False)
    for col, kind in enumerate(kinds):
        sides = list(dict.fromkeys(r["side"] for r in rows if r["kind"] == kind))
        for side in sides:
            mine = [r for r in rows if r["kind"] == kind and r["side"] == side]
            ns = [r["n"] for r in mine]
            style = "--" if side == SEQUENTIAL or side.startswith(PEER) else "-"
            axes[0][col].plot(ns, [r["wall_ms"] for r in mine], style, marker="o", label=side)
            axes[1][col].plot(ns, [r["efficiency"] for r in mine], style, marker="o", label=side)
        axes[0][col].set(title=f"{kind} tools: wall time", xlabel="N tools", ylabel="ms",
                         xscale="log", yscale="log")
        axes[1][col].set(title=f"{kind} tools: efficiency (ideal / actual)", xlabel="N tools",
                         ylabel="efficiency", xscale="log")
        top = max(r["efficiency"] for r in rows if r["kind"] == kind)
        axes[1][col].set_ylim(0, max(1.05, top * 1.05))
        if kind == "await":
            axes[1][col].axhline(BAR, color="grey", linewidth=0.8, linestyle=":")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xticks(result.data["ns"], [str(n) for n in result.data["ns"]])
            ax.grid(True, alpha=0.3)
        axes[0][col].legend(fontsize=8)
    fig.suptitle(f"Parallel tools ({result.machine['nproc']} cores, {result.size})")
    return save_figure(fig, directory, NAME, dpi=90)


if __name__ == "__main__":
    import sys

    from agent_ng.bench.report import show

    show(asyncio.run(run(sys.argv[1] if len(sys.argv) > 1 else "n16")))
