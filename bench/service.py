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
bounded by the client's own guard. A second table is the floor: the paced model alone, K
streams in one process (``agent_ng.bench.service_server floor``), raw and through LangChain's
``astream``.

To measure a change, run other checkouts of agent-ng as sides of their own, in the same run
(their code on this environment's packages, ``importable``), at the levels that matter; a side
is named after its folder and commit (``+``: with changes)::

    python -m agent_ng.bench.service --side /tmp/before --levels 300,1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import httpx

from agent_ng.bench.measure import (
    Result,
    Table,
    free_port,
    label_panel,
    median,
    plain_numbers,
    rotated,
    save,
    save_figure,
)

NAME = "service"
RATE = 20.0
MAX_RUNS = 100_000
"""``AGENT_MAX_RUNS`` for our server: every stream of a level runs at once, as ``langgraph dev``'s
``--n-jobs-per-worker`` lets its own."""
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


def importable(checkout: Path, into: Path) -> Path:
    """A folder that, first on ``PYTHONPATH``, makes ``agent_ng`` the code of another checkout of
    this project: its packages' folders (pyproject's ``package-dir``) linked as one ``agent_ng``
    tree, so it runs on this environment's packages (the editable install's finder comes after
    ``PYTHONPATH``)."""
    dirs = tomllib.loads((checkout / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root = into / "agent_ng"
    root.mkdir()
    for entry in (checkout / dirs["agent_ng"]).iterdir():
        (root / entry.name).symlink_to(entry.resolve())
    for package, folder in dirs.items():
        if package != "agent_ng":
            (root / package.removeprefix("agent_ng.")).symlink_to((checkout / folder).resolve())
    return into


def revision(checkout: Path) -> str:
    """The checkout's commit, short, with ``+`` when its tree has changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


@asynccontextmanager
async def ours(tokens: int, rate: float, checkout: Path | None = None) -> AsyncIterator[Server]:
    """Our server, from this install or from another ``checkout`` (named after its folder and commit)."""
    with tempfile.TemporaryDirectory(prefix="bench-checkout-") as scratch:
        env = os.environ | {"AGENT_MAX_RUNS": str(MAX_RUNS)}
        name = "ours (agent-ng serve)"
        if checkout is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(importable(checkout, Path(scratch))), *filter(None, [env.get("PYTHONPATH")])])
            name = f"ours {checkout.name} ({revision(checkout)})"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent_ng.bench.service_server", str(tokens), str(rate),
            stdout=asyncio.subprocess.PIPE, start_new_session=True, env=env,
        )
        try:
            line = await asyncio.wait_for(process.stdout.readline(), STARTUP_GUARD_S)
            if not line.strip():
                raise RuntimeError("agent_ng.bench.service_server exited before it bound a port (see its stderr)")
            url = f"http://127.0.0.1:{int(line)}"
            await wait_ready(f"{url}/healthz", process, lambda: "")
            yield Server(name, "ours", url, process.pid)
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


async def floor(k: int, tokens: int) -> dict:
    """The paced model alone at ``k`` streams, in a process of its own: CPU µs per token."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_ng.bench.service_server", "floor", str(k), str(tokens), str(RATE),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await child.communicate()
    if child.returncode:
        raise RuntimeError(f"the model floor failed at K = {k}")
    return {"k": k, **json.loads(stdout)}


async def run(size: str = "full", checkouts: Sequence[Path] = (), levels: dict[int, int] | None = None) -> Result:
    """The levels of ``size`` (or ``levels``: K -> rounds); each of ``checkouts`` a side of its own
    besides this install's server and ``langgraph dev``."""
    spec = SIZES[size]
    levels = levels or dict(spec.levels)
    ks = list(levels)
    runs: list[dict] = []
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(ours(spec.tokens, RATE, c)) for c in checkouts]
        servers.append(await stack.enter_async_context(ours(spec.tokens, RATE)))
        servers.append(await stack.enter_async_context(langgraph_dev(spec.tokens, RATE, spec.peer_max_k)))
        idle = {s.name: rss_mb(s.pid) for s in servers}
        for server in servers:
            await level(server, 2, spec.tokens)
        for k, rounds in levels.items():
            for round_ in range(rounds):
                for server in rotated(servers, round_):
                    if server.protocol == "ours" or k <= spec.peer_max_k:
                        runs.append(await level(server, k, spec.tokens))
    floors = [await floor(k, spec.tokens) for k in ks]
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
    floor_table = Table(
        f"The floor: the paced model alone, K streams of {spec.tokens} tokens at {RATE:g} tokens/s in one "
        "process, CPU per token",
        ["K", "model._astream (us)", "model.astream, LangChain's callbacks (us)"],
        [[f["k"], round(f["raw_us_per_token"], 1), round(f["astream_us_per_token"], 1)] for f in floors],
        note="What any server of this model spends per token before it does anything with it.",
    )
    data = {"rate": RATE, "tokens": spec.tokens, "levels": ks, "rounds": levels, "rows": rows,
            "runs": runs, "idle_rss_mb": idle, "floor": floors}
    return Result(NAME, size, [table, floor_table], data)


def plot(result: Result, directory: Path) -> list[Path]:
    rows = result.data["rows"]
    servers = list(dict.fromkeys(r["server"] for r in rows))
    panels = [
        ("time to first token (ms)", [("ttft_p50_ms", "p50", "-"), ("ttft_p99_ms", "p99", "--")]),
        ("time to last token (s)", [("last_p50_s", "p50", "-"), ("last_p99_s", "p99", "--")]),
        ("gap between tokens, p99 (ms)", [("gap_p99_ms", "", "-")]),
        ("server CPU (cores)", [("server_cores", "", "-")]),
    ]
    colors = dict(zip(servers, ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple"), strict=False))
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
        plain_numbers(ax.yaxis)
        label_panel(ax, panel, "concurrent streams K")
    fig.suptitle(f"{title}, one process per server, {result.machine['nproc']} cores")
    return fig


if __name__ == "__main__":
    from agent_ng.bench.report import show

    parser = argparse.ArgumentParser(prog="python -m agent_ng.bench.service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=Path, action="append", default=[],
                        help="another checkout of agent-ng, run as a side of its own (repeatable)")
    parser.add_argument("--levels", help="K values, comma-separated (default: the full size's)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per level given with --levels")
    args = parser.parse_args()
    chosen = {int(k): args.rounds for k in args.levels.split(",")} if args.levels else None
    result = asyncio.run(run("full", args.side, chosen))
    save(result)
    show(result)
