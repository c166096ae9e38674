"""Benchmark 5: K concurrent SSE streams against the service, a model emitting 20 tokens/s.

The server runs the service's app in a process of its own (``bench.service_server``, one
uvicorn worker on a free 127.0.0.1 port, the paced bench model); this process is the client:
K streams opened at once with httpx (a connection limit above K), each one question
(``POST /threads/{id}/runs/stream``) on a thread of its own. Per stream: time to the first
``content`` event, the gaps between ``content`` events. Per level: the server's CPU (from
/proc, cores used over the level) and peak resident memory (sampled every 50 ms), errors
(a status other than 200, a failed connection, or a stream missing tokens). Each level is
bounded by ``GUARD_S``. ``langgraph dev`` as a peer is not run here.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import httpx

from bench.measure import Result, Table, median

NAME = "service"
RATE = 20.0
GUARD_S = 120.0
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Size:
    levels: tuple[int, ...]
    tokens: int


SIZES = {"full": Size((10, 100, 300), 40), "smoke": Size((5,), 5)}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Stream:
    ok: bool = False
    error: str = ""
    ttft_s: float | None = None
    gaps_s: tuple[float, ...] = ()


async def one_stream(client: httpx.AsyncClient, base: str, tokens: int) -> Stream:
    start = perf_counter()
    times: list[float] = []
    try:
        async with client.stream(
            "POST", f"{base}/threads/{uuid.uuid4()}/runs/stream", json={"input": "go"}
        ) as response:
            if response.status_code != 200:
                return Stream(error=f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if line == "event: content":
                    times.append(perf_counter())
    except httpx.HTTPError as exc:
        return Stream(error=type(exc).__name__)
    if len(times) != tokens:
        return Stream(error=f"{len(times)} of {tokens} tokens")
    gaps = tuple(b - a for a, b in zip(times, times[1:]))
    return Stream(ok=True, ttft_s=times[0] - start, gaps_s=gaps)


async def level(base: str, pid: int, k: int, tokens: int) -> dict:
    limits = httpx.Limits(max_connections=k + 10, max_keepalive_connections=k + 10)
    timeout = httpx.Timeout(GUARD_S, connect=GUARD_S)
    peak = rss_mb(pid)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        cpu0, t0 = cpu_s(pid), perf_counter()
        tasks = [asyncio.ensure_future(one_stream(client, base, tokens)) for _ in range(k)]
        async with asyncio.timeout(GUARD_S):
            while not all(t.done() for t in tasks):
                peak = max(peak, rss_mb(pid))
                await asyncio.wait(tasks, timeout=0.05)
        wall, cpu = perf_counter() - t0, cpu_s(pid) - cpu0
    streams = [t.result() for t in tasks]
    ok = [s for s in streams if s.ok]
    ttft = [s.ttft_s for s in ok]
    gaps = [g for s in ok for g in s.gaps_s]
    errors: dict[str, int] = {}
    for s in streams:
        if not s.ok:
            errors[s.error] = errors.get(s.error, 0) + 1
    return {
        "k": k,
        "wall_s": wall,
        "ttft_p50_ms": median(ttft) * 1e3 if ttft else float("nan"),
        "ttft_p99_ms": percentile(ttft, 0.99) * 1e3,
        "gap_p50_ms": percentile(gaps, 0.5) * 1e3,
        "gap_p99_ms": percentile(gaps, 0.99) * 1e3,
        "server_cpu_s": cpu,
        "server_cores": cpu / wall,
        "server_rss_peak_mb": peak,
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.service_server", str(spec.tokens), str(RATE)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), GUARD_S))
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            async with asyncio.timeout(GUARD_S):
                while True:
                    try:
                        if (await client.get(f"{base}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
        idle_rss = rss_mb(server.pid)
        await level(base, server.pid, 2, spec.tokens)
        rows = [await level(base, server.pid, k, spec.tokens) for k in spec.levels]
    finally:
        server.terminate()
        server.wait(10)
    table = Table(
        f"Service load: K concurrent SSE streams, each {spec.tokens} tokens at {RATE:g} tokens/s "
        f"(one uvicorn process, loopback; idle server RSS {idle_rss:.0f} MB)",
        ["K", "TTFT p50 (ms)", "TTFT p99 (ms)", "gap p50 (ms)", "gap p99 (ms)",
         "server CPU (cores)", "server RSS peak (MB)", "errors", "wall (s)"],
        [
            [r["k"], round(r["ttft_p50_ms"], 1), round(r["ttft_p99_ms"], 1),
             round(r["gap_p50_ms"], 1), round(r["gap_p99_ms"], 1), round(r["server_cores"], 2),
             round(r["server_rss_peak_mb"], 1), r["errors"], round(r["wall_s"], 2)]
            for r in rows
        ],
    )
    data = {"rate": RATE, "tokens": spec.tokens, "levels": list(spec.levels), "rows": rows,
            "idle_rss_mb": idle_rss}
    return Result(NAME, size, [table], data)
