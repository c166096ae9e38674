"""Benchmark 5: K concurrent SSE streams against a server, a model emitting 20 tokens/s.

Three processes: the server, the load client (``agent_ng.bench.load_client``) and this one, which only
starts them and samples the server's CPU and resident memory from /proc every 50 ms.

- **ours**: ``agent-ng serve``'s app (``agent_ng.bench.service_server``: one uvicorn worker on a free
  127.0.0.1 port, in-memory saver and tool store, the paced bench model).
- **langgraph dev**: the same graph (``agent_ng.bench.studio_load``) under ``langgraph dev`` (in-memory
  runtime, one worker), with ``--n-jobs-per-worker`` at its largest K so it runs every stream
  at once as ours does (its default, 10, would queue the rest), logs at WARNING as ours. It
  runs the levels up to ``peer_max_k`` (300): beyond, one level takes longer than the suite's
  whole budget allows.

Each stream is one question on a thread of its own. Per level: time to the response headers,
to the first and to the last token (p50/p99), gaps between tokens (p50/p99), the server's CPU
(cores used over the level, and per token) and peak RSS (its whole process tree), the client's
CPU, and errors. The
levels alternate between the servers, each level some rounds (fewer for the large ones, to keep
``agent-ng bench`` within its budget), and the table gives medians over the rounds. A level is
bounded by the client's own guard.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import httpx

from agent_ng.bench.measure import Result, Table, free_port, median, rotated, save_figure

NAME = "service"
RATE = 20.0
TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_GUARD_S = 90.0


@dataclass(frozen=True)
class Size:
    levels: tuple[tuple[int, int], ...]
    """``(K, rounds)``: the large levels take long enough to run once within the suite's budget."""
    tokens: int
    peer_max_k: int
    """``langgraph dev`` runs the levels up to here: at 1,000 streams it took 83 s alone."""


SIZES = {
    "full": Size(((10, 3), (100, 2), (300, 1), (1000, 1)), 40, 300),
    "smoke": Size(((3, 1),), 5, 3),
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``langgraph dev`` may run its server in a child)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            pids += [int(p) for p in task.read_text().split()]
        i += 1
    return pids


def cpu_s(pid: int) -> float:
    total = 0
    for p in tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


@dataclass(frozen=True)
class Server:
    name: str
    protocol: str
    """How the load client talks to it (``agent_ng.bench.load_client``)."""
    url: str
    pid: int


async def wait_ready(url: str, process: asyncio.subprocess.Process, log: Callable[[], str]) -> None:
    async with httpx.AsyncClient() as client:
        async with asyncio.timeout(STARTUP_GUARD_S):
            while process.returncode is None:
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
    raise RuntimeError(f"the server exited before it was ready:\n{log()[-3000:]}")


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


@asynccontextmanager
async def ours(tokens: int, rate: float) -> AsyncIterator[Server]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_ng.bench.service_server", str(tokens), str(rate),
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_GUARD_S)
        if not line.strip():
            raise RuntimeError("agent_ng.bench.service_server exited before it bound a port (see its stderr)")
        url = f"http://127.0.0.1:{int(line)}"
        await wait_ready(f"{url}/healthz", process, lambda: "")
        yield Server("ours (agent-ng serve)", "ours", url, process.pid)
    finally:
        await stop(process)


@asynccontextmanager
async def langgraph_dev(tokens: int, rate: float, jobs: int) -> AsyncIterator[Server]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-langgraph-dev-") as scratch:
        config = Path(scratch, "langgraph.json")
        repo = Path(__file__).resolve().parents[1]
        config.write_text(json.dumps(
            {"dependencies": [str(repo)], "graphs": {"agent": "agent_ng.bench.studio_load:graph"}}
        ))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_"))}
        env |= {"BENCH_TOKENS": str(tokens), "BENCH_RATE": str(rate), "LOG_LEVEL": "WARNING",
                "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false"}
        log_path = Path(scratch, "server.log")
        with log_path.open("w") as log:
            process = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "langgraph"), "dev", "--no-browser",
                "--no-reload", "--port", str(port), "--config", str(config),
                "--n-jobs-per-worker", str(jobs), "--server-log-level", "WARNING",
                cwd=scratch, env=env, stdout=log, stderr=log, start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(f"{url}/ok", process, log_path.read_text)
            yield Server("langgraph dev", "langgraph", url, process.pid)
        finally:
            await stop(process)


async def level(server: Server, k: int, tokens: int) -> dict:
    """One load level: the client's K streams, the server sampled until the client exits."""
    cpu0, t0, peak = cpu_s(server.pid), perf_counter(), rss_mb(server.pid)
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_ng.bench.load_client", server.protocol, server.url, str(k),
        str(tokens), stdout=asyncio.subprocess.PIPE,
    )
    output = asyncio.ensure_future(client.communicate())
    while not output.done():
        peak = max(peak, rss_mb(server.pid))
        await asyncio.wait([output], timeout=0.05)
    wall, cpu = perf_counter() - t0, cpu_s(server.pid) - cpu0
    stdout, _ = output.result()
    if client.returncode:
        raise RuntimeError(f"the load client failed against {server.name} at K = {k}")
    report = json.loads(stdout)
    streams = report["streams"]
    ok = [s for s in streams if not s["error"]]
    errors: dict[str, int] = {}
    for s in streams:
        if s["error"]:
            errors[s["error"]] = errors.get(s["error"], 0) + 1
    ttft = [s["ttft_s"] for s in ok]
    headers = [s["headers_s"] for s in ok]
    last = [s["last_s"] for s in ok]
    gaps = [g for s in ok for g in s["gaps_s"]]
    return {
        "server": server.name,
        "k": k,
        "wall_s": wall,
        "headers_p50_ms": percentile(headers, 0.5) * 1e3,
        "ttft_p50_ms": percentile(ttft, 0.5) * 1e3,
        "ttft_p99_ms": percentile(ttft, 0.99) * 1e3,
        "last_p50_s": percentile(last, 0.5),
        "last_p99_s": percentile(last, 0.99),
        "gap_p50_ms": percentile(gaps, 0.5) * 1e3,
        "gap_p99_ms": percentile(gaps, 0.99) * 1e3,
        "server_cpu_s": cpu,
        "server_cores": cpu / wall,
        "server_us_per_token": cpu / (k * tokens) * 1e6,
        "server_rss_peak_mb": peak,
        "client_cpu_s": report["client_cpu_s"],
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


METRICS = ("headers_p50_ms", "ttft_p50_ms", "ttft_p99_ms", "last_p50_s", "last_p99_s",
           "gap_p50_ms", "gap_p99_ms",
           "server_cpu_s", "server_cores", "server_us_per_token", "server_rss_peak_mb",
           "client_cpu_s", "wall_s")


def summarize(runs: list[dict]) -> dict:
    """Medians over the rounds of one server at one level; errors are summed."""
    row = {"server": runs[0]["server"], "k": runs[0]["k"], "rounds": len(runs)}
    row |= {m: median([r[m] for r in runs]) for m in METRICS}
    row["errors"] = sum(r["errors"] for r in runs)
    row["error_kinds"] = {}
    for r in runs:
        for kind, n in r["error_kinds"].items():
            row["error_kinds"][kind] = row["error_kinds"].get(kind, 0) + n
    row["streams"] = sum(r["k"] for r in runs)
    return row


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    ks = [k for k, _ in spec.levels]
    runs: list[dict] = []
    async with ours(spec.tokens, RATE) as our_server, langgraph_dev(
        spec.tokens, RATE, spec.peer_max_k
    ) as peer:
        servers = [our_server, peer]
        idle = {s.name: rss_mb(s.pid) for s in servers}
        for server in servers:
            await level(server, 2, spec.tokens)
        for k, rounds in spec.levels:
            for round_ in range(rounds):
                for server in rotated(servers, round_):
                    if server is our_server or k <= spec.peer_max_k:
                        runs.append(await level(server, k, spec.tokens))
    rows = [
        summarize(mine)
        for k in ks for s in servers
        if (mine := [r for r in runs if r["server"] == s.name and r["k"] == k])
    ]
    table = Table(
        f"Service load: K concurrent SSE streams, each {spec.tokens} tokens at {RATE:g} tokens/s, "
        f"one server process each, loopback, client in its own process; median of the rounds "
        f"(idle RSS: "
        + ", ".join(f"{name} {mb:.0f} MB" for name, mb in idle.items()) + ")",
        ["server", "K", "rounds", "headers p50 (ms)", "TTFT p50 (ms)", "TTFT p99 (ms)",
         "last token p50 (s)", "last token p99 (s)", "gap p50 (ms)", "gap p99 (ms)",
         "server CPU (cores)", "server CPU per token (us)", "server RSS peak (MB)",
         "client CPU (s)", "errors / streams", "wall (s)"],
        [
            [r["server"], r["k"], r["rounds"], round(r["headers_p50_ms"], 1),
             round(r["ttft_p50_ms"], 1), round(r["ttft_p99_ms"], 1), round(r["last_p50_s"], 2),
             round(r["last_p99_s"], 2), round(r["gap_p50_ms"], 1), round(r["gap_p99_ms"], 1),
             round(r["server_cores"], 2), round(r["server_us_per_token"]),
             round(r["server_rss_peak_mb"], 1), round(r["client_cpu_s"], 2),
             f"{r['errors']} / {r['streams']}", round(r["wall_s"], 2)]
            for r in rows
        ],
        note=f"Ideal: TTFT a few ms (the model's first token comes at once), last token at "
        f"{(spec.tokens - 1) / RATE:g} s, gaps {1e3 / RATE:g} ms. A gap p50 far below that means "
        "tokens arrive in bursts: the server is behind. CPU per token is the server's CPU over "
        "the level divided by K x tokens, so each run's fixed cost is in it.",
    )
    data = {"rate": RATE, "tokens": spec.tokens, "levels": ks,
            "rounds": dict(spec.levels), "rows": rows, "runs": runs, "idle_rss_mb": idle}
    return Result(NAME, size, [table], data)


def plot(result: Result, directory: Path) -> list[Path]:
    rows = result.data["rows"]
    servers = list(dict.fromkeys(r["server"] for r in rows))
    panels = [
        ("time to first token (ms)", [("ttft_p50_ms", "p50", "-"), ("ttft_p99_ms", "p99", "--")]),
        ("time to last token (s)", [("last_p50_s", "p50", "-"), ("last_p99_s", "p99", "--")]),
        ("gap between tokens, p99 (ms)", [("gap_p99_ms", "", "-")]),
        ("server CPU (cores)", [("server_cores", "", "-")]),
    ]
    colors = dict(zip(servers, ("tab:blue", "tab:red"), strict=False))
    title = f"Service load: {result.data['tokens']} tokens at {result.data['rate']:g} tokens/s per stream"
    return save_figure(levels_figure(result, panels, colors, title), directory, NAME)


Panel = tuple[str, list[tuple[str, str, str]]]
"""A panel's title and its series: (row key, label, line style)."""


def levels_figure(result: Result, panels: list[Panel], colors: dict[str, str], title: str):
    """One panel per measure against the load level K, a line per server (in ``colors``); the
    first-token panel on a log scale. Also the LangGraph Server API bench's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = result.data["rows"]
    fig, axes = plt.subplots(1, len(panels), figsize=(20, 4.5))
    for ax, (panel, series) in zip(axes, panels, strict=True):
        for server, color in colors.items():
            mine = [r for r in rows if r["server"] == server]
            for key, label, style in series:
                ax.plot([r["k"] for r in mine], [r[key] for r in mine], style, marker="o",
                        color=color, label=f"{server} {label}".strip())
        ax.set_xscale("log")
        ax.set_yscale("log" if "first token" in panel else "linear")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("concurrent streams K")
        ax.set_title(panel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}, one process per server, {result.machine['nproc']} cores")
    return fig
