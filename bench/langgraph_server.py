"""Benchmark 8: K concurrent streams through the LangGraph Server API, ``agent-ng serve``'s
``/langgraph`` beside ``langgraph dev`` serving the same graph, and our native route for reference.

The service bench's set-up and measures (``agent_ng.bench.service``): each server one process
over the paced bench model (20 tokens/s, in-memory saver and tool store), the load client a
process of its own, this one sampling the servers' CPU and RSS every 50 ms; levels of K streams,
rounds alternating between the servers, medians over the rounds.

- **ours, /langgraph** and **langgraph dev** get what ``langgraph_sdk`` sends: ``POST /threads``
  for each stream (not timed), then ``POST /threads/{id}/runs/stream`` with ``messages-tuple``,
  ``custom`` and ``updates``; a token is a message tuple whose chunk has text.
- **ours, native** is ``POST /threads/{id}/runs/stream`` on ``agent-ng serve``'s own route; a
  token is a ``content`` event.

All three are read by ``agent_ng.bench.load_client``, the same code for the two LangGraph sides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from agent_ng.bench import service
from agent_ng.bench.measure import Result, Table, rotated, save_figure

NAME = "langgraph_server"
RATE = service.RATE
OURS_LANGGRAPH, DEV, NATIVE = "ours, /langgraph", "langgraph dev", "ours, native"


@dataclass(frozen=True)
class Size:
    levels: tuple[tuple[int, int], ...]
    """``(K, rounds)``, as the service bench has them up to 300 (``langgraph dev``'s limit there)."""
    tokens: int


SIZES = {"full": Size(((10, 3), (100, 2), (300, 1)), 40), "smoke": Size(((3, 1),), 5)}


@asynccontextmanager
async def servers(tokens: int, jobs: int) -> AsyncIterator[list[service.Server]]:
    """The three sides, each its own process: our app twice (one per route, so each side's
    memory is its own) and ``langgraph dev``."""
    async with AsyncExitStack() as stack:
        langgraph = await stack.enter_async_context(service.ours(tokens, RATE))
        native = await stack.enter_async_context(service.ours(tokens, RATE))
        dev = await stack.enter_async_context(service.langgraph_dev(tokens, RATE, jobs))
        yield [
            replace(langgraph, name=OURS_LANGGRAPH, protocol="langgraph", url=f"{langgraph.url}/langgraph"),
            replace(dev, name=DEV),
            replace(native, name=NATIVE),
        ]


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    ks = [k for k, _ in spec.levels]
    runs: list[dict] = []
    async with servers(spec.tokens, max(ks)) as sides:
        idle = {s.name: service.rss_mb(s.pid) for s in sides}
        for side in sides:
            await service.level(side, 2, spec.tokens)
        for k, rounds in spec.levels:
            for round_ in range(rounds):
                for side in rotated(sides, round_):
                    runs.append(await service.level(side, k, spec.tokens))
    rows = [
        service.summarize(mine)
        for k in ks for s in sides
        if (mine := [r for r in runs if r["server"] == s.name and r["k"] == k])
    ]
    table = Table(
        f"LangGraph Server API load: K concurrent streams (langgraph_sdk's requests), each {spec.tokens} "
        f"tokens at {RATE:g} tokens/s, one server process each, client in its own process; median of "
        "the rounds (idle RSS: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in idle.items()) + ")",
        ["server", "K", "rounds", "headers p50 (ms)", "TTFT p50 (ms)", "TTFT p99 (ms)", "last token p50 (s)",
         "gap p50 (ms)", "gap p99 (ms)", "server CPU (cores)", "server CPU per token (us)",
         "server RSS peak (MB)", "errors / streams", "wall (s)"],
        [
            [r["server"], r["k"], r["rounds"], round(r["headers_p50_ms"], 1), round(r["ttft_p50_ms"], 1),
             round(r["ttft_p99_ms"], 1), round(r["last_p50_s"], 2), round(r["gap_p50_ms"], 1),
             round(r["gap_p99_ms"], 1), round(r["server_cores"], 2), round(r["server_us_per_token"]),
             round(r["server_rss_peak_mb"], 1), f"{r['errors']} / {r['streams']}", round(r["wall_s"], 2)]
            for r in rows
        ],
        note=f"Ideal: TTFT a few ms, last token at {(spec.tokens - 1) / RATE:g} s, gaps {1e3 / RATE:g} ms. "
        "Ours serves both routes from the same app, in two processes here; the LangGraph sides make "
        "a thread first (not timed) and stream three modes, the native side one.",
    )
    data = {"rate": RATE, "tokens": spec.tokens, "levels": ks, "rounds": dict(spec.levels),
            "rows": rows, "runs": runs, "idle_rss_mb": idle}
    return Result(NAME, size, [table], data)


def plot(result: Result, directory: Path) -> list[Path]:
    panels = [
        ("time to first token (ms)", [("ttft_p50_ms", "p50", "-"), ("ttft_p99_ms", "p99", "--")]),
        ("gap between tokens, p99 (ms)", [("gap_p99_ms", "", "-")]),
        ("server CPU per token (us)", [("server_us_per_token", "", "-")]),
        ("server RSS peak (MB)", [("server_rss_peak_mb", "", "-")]),
    ]
    colors = {OURS_LANGGRAPH: "tab:blue", DEV: "tab:red", NATIVE: "tab:gray"}
    title = (f"LangGraph Server API load: {result.data['tokens']} tokens at {result.data['rate']:g} "
             "tokens/s per stream")
    return save_figure(service.levels_figure(result, panels, colors, title), directory, NAME)
