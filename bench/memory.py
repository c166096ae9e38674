"""Benchmark 6: memory per active run and per 1,000 checkpointed messages.

- Active runs: K runs at once, each paused inside its tool (an ``asyncio.Event`` holds it), so
  each has its state, tasks and stream alive; ours (``AgentEvent`` stream) and langchain's
  ``create_agent`` (``stream_mode=["messages", "updates"]``), both on one SQLite checkpointer.
  Python allocations per run come from ``tracemalloc``; resident memory (RSS) per run from a
  fresh subprocess per side, since a warm allocator reuses what earlier rounds freed.
- A long answer: the Python memory one answer of N tokens costs per token, at its peak and
  still held by the last token (``tracemalloc``), read each way the streaming bench reads it
  (raw ``model.astream``, a bare LangGraph graph, ``create_agent``, ours three ways, our SSE
  endpoint with server and client in this process).
- Checkpointed messages: the bytes an in-memory saver holds for a thread built turn by turn to
  about 1,000 messages, and the Python memory of that thread's state once loaded. (RSS growth is
  not used here: in a process that already freed memory, the allocator reuses it.)
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.bench.measure import Result, Table, median, rss_bytes
from agent_ng.bench.models import TokenModel, ToolTurnModel
from agent_ng.bench.paths import SSE, bench_settings, paths, sse_path
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer

NAME = "memory"
SIDES = ("ours", "create_agent")
GUARD_S = 120


@dataclass(frozen=True)
class Size:
    runs: int
    rounds: int
    messages: int


SIZES = {"full": Size(100, 3, 1000), "smoke": Size(3, 1, 8)}
LONG_ANSWERS = {"full": (2_000, 20_000), "smoke": (200,)}


class Hold:
    """A tool that waits until released, and signals when ``expected`` calls are waiting."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.reset()

    def reset(self) -> None:
        self.waiting = 0
        self.all_in = asyncio.Event()
        self.release = asyncio.Event()

    def tool(self) -> BaseTool:
        @tool
        async def hold(i: int) -> str:
            """Wait until released."""
            self.waiting += 1
            if self.waiting == self.expected:
                self.all_in.set()
            await self.release.wait()
            return "released"

        return hold


async def active_runs(side: str, runs: int, traced: bool) -> dict[str, float]:
    """Start ``runs`` runs of ``side``, measure with all of them paused in their tool, finish."""
    from langchain.agents import create_agent

    hold = Hold(runs)
    model = ToolTurnModel(tool="hold", calls=1)
    with tempfile.TemporaryDirectory() as tmp:
        async with open_checkpointer(f"sqlite:///{Path(tmp) / 'memory.db'}") as saver:
            if side == "ours":
                graph = build_graph(model, [hold.tool()], saver, bench_settings())

                async def one() -> None:
                    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
                    async for _ in stream(graph, {"messages": [HumanMessage("hold")]}, config):
                        pass
            else:
                peer = create_agent(model, [hold.tool()], checkpointer=saver)

                async def one() -> None:
                    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
                    async for _ in peer.astream(
                        {"messages": [HumanMessage("hold")]}, config,
                        stream_mode=["messages", "updates"],
                    ):
                        pass

            hold.release.set()
            await one()
            hold.reset()

            gc.collect()
            if traced:
                tracemalloc.start()
            before_rss, before_py = rss_bytes(), tracemalloc.get_traced_memory()[0]
            tasks = [asyncio.create_task(one()) for _ in range(runs)]
            async with asyncio.timeout(GUARD_S):
                await hold.all_in.wait()
            gc.collect()
            after_rss, after_py = rss_bytes(), tracemalloc.get_traced_memory()[0]
            if traced:
                tracemalloc.stop()
            hold.release.set()
            async with asyncio.timeout(GUARD_S):
                await asyncio.gather(*tasks)
    return {
        "rss_per_run_kb": (after_rss - before_rss) / runs / 1024,
        "py_per_run_kb": (after_py - before_py) / runs / 1024,
    }


def rss_in_subprocess(side: str, runs: int) -> float:
    """Resident KB per run of ``side``, measured in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-m", "agent_ng.bench.memory", side, str(runs)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["rss_per_run_kb"]


@tool
async def lookup(i: int) -> str:
    """Return a tool result of a realistic size."""
    return "A line of tool output, the kind a search or a file read returns. " * 8


async def checkpointed_messages(target: int) -> dict[str, float]:
    """Bytes an in-memory saver holds per 1,000 messages, and the loaded state's size."""
    saver = InMemorySaver()
    model = ToolTurnModel(tool="lookup", calls=1, answer_words=40)
    graph = build_graph(model, [lookup], saver, bench_settings())
    config = {"configurable": {"thread_id": "memory-thread"}}
    question = "Please look this up for me and tell me what you find about it. " * 2
    count = 0
    while count < target:
        async for _ in stream(graph, {"messages": [HumanMessage(question)]}, config):
            pass
        count = len((await graph.aget_state(config)).values["messages"])
    gc.collect()
    tracemalloc.start()
    state = await graph.aget_state(config)
    loaded = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del state
    stored = sum(len(v[1]) for v in saver.blobs.values()) + sum(
        len(c[1]) + len(m[1]) for ns in saver.storage.values() for cps in ns.values()
        for c, m, _ in cps.values()
    )
    return {
        "messages": count,
        "saver_bytes_mb_per_1000": stored / 1e6 * 1000 / count,
        "loaded_state_mb_per_1000": loaded / 1e6 * 1000 / count,
    }


class HeldAtEnd(TokenModel):
    """``TokenModel`` that reads the traced memory just before its last token: what a long
    answer holds while it streams, before the final merge and checkpoint."""

    held: list[int] = []

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            if chunk.message.chunk_position == "last":
                self.held.append(tracemalloc.get_traced_memory()[0])
            yield chunk


async def long_answer(tokens: int) -> dict[str, dict[str, float]]:
    """Bytes per token of one ``tokens``-token answer, each reader: peak, and held at the end."""
    model = HeldAtEnd(tokens=tokens, held=[])
    out: dict[str, dict[str, float]] = {}
    async with sse_path(model) as sse:
        for name, read in {**paths(model, InMemorySaver()), SSE: sse}.items():
            await read()
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            await read()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            out[name] = {"peak": (peak - base) / tokens, "held": (model.held[-1] - base) / tokens}
    return out


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    py: dict[str, list[float]] = {side: [] for side in SIDES}
    rss: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(spec.rounds):
        for side in SIDES[r % 2:] + SIDES[: r % 2]:
            py[side].append((await active_runs(side, spec.runs, traced=True))["py_per_run_kb"])
            rss[side].append(await asyncio.to_thread(rss_in_subprocess, side, spec.runs))
    messages = await checkpointed_messages(spec.messages)
    answers = {n: await long_answer(n) for n in LONG_ANSWERS[size]}
    tables = [
        Table(
            f"Memory per active run: {spec.runs} runs paused in a tool at once, median of "
            f"{spec.rounds}",
            ["side", "Python KB per run (tracemalloc)", "resident KB per run (RSS)", "x create_agent (Python)"],
            [
                [side, round(median(py[side]), 1), round(median(rss[side]), 1),
                 round(median(py[side]) / median(py["create_agent"]), 2)]
                for side in SIDES
            ],
        ),
        Table(
            f"Memory per 1,000 checkpointed messages (thread of {messages['messages']} messages, "
            "built turn by turn)",
            ["what", "MB per 1,000 messages"],
            [
                ["in-memory saver, bytes held (every checkpoint)", round(messages["saver_bytes_mb_per_1000"], 2)],
                ["loaded thread state (Python objects)", round(messages["loaded_state_mb_per_1000"], 2)],
            ],
        ),
    ]
    readers = list(answers[LONG_ANSWERS[size][0]])
    tables.append(
        Table(
            "Memory of one long answer, Python bytes per token (tracemalloc): peak, and held "
            "before the last token",
            ["reader", *(f"{n:,} tokens: {what}" for n in answers for what in ("peak", "held"))],
            [
                [name, *(round(answers[n][name][what]) for n in answers for what in ("peak", "held"))]
                for name in readers
            ],
        )
    )
    data: dict[str, Any] = {
        "runs": spec.runs,
        "py_per_run_kb": {side: median(v) for side, v in py.items()},
        "rss_per_run_kb": {side: median(v) for side, v in rss.items()},
        "checkpointed": messages,
        "long_answer_bytes_per_token": answers,
    }
    return Result(NAME, size, tables, data)


if __name__ == "__main__":
    side, runs = sys.argv[1], int(sys.argv[2])
    print(json.dumps(asyncio.run(active_runs(side, runs, traced=False))))
