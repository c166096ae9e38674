"""Benchmark 10: scaling. What a second process buys on this machine, at a bounded token gap.

The sides, each serving ``agent-ng serve``'s app over the paced bench model (20 tokens/s;
``agent_ng.bench.scaling_server``) on the same stores, an SQLite checkpointer (``agent-ng
serve``'s default; a file of the side's own) and an in-memory tool store:

- **one process**: one uvicorn worker, its event log in the process;
- **one process, Redis log**: the same with ``AGENT_REDIS_URL``, the event log the other sides
  need (so the step from one to two processes is seen apart from the cost of sharing the log);
- **--workers 2**: two uvicorn workers on one port, as ``agent-ng serve --workers 2`` runs them
  (``AGENT_WORKERS=2``: ``agent_ng.service.topology`` refuses a ``memory://`` checkpointer and
  an in-process log there), the kernel dealing the connections;
- **2 replicas + HAProxy**: two one-worker processes behind ``haproxy -f deploy/haproxy.cfg``
  (``leastconn``), sharing the SQLite file and Redis as replicas on one machine may. Each stream
  stays on the replica it reached, so no run table (PostgreSQL) is needed here.

A level is K concurrent streams held for a while: K users, each asking one question on a new
thread, then the next as soon as the answer (``TOKENS`` tokens) is whole; their first questions
are spread over one answer's length so the runs' starts do not come in waves. The load client
(``python -m agent_ng.bench.scaling URL K TOKENS RATE WARMUP WINDOW``, a process of its own,
reading each stream with ``agent_ng.bench.load_client.one_stream``) counts what arrives in a
window after a warm-up: tokens per second, the gaps between a stream's tokens (p50/p99), the
time to the first token of the answers begun in it, errors. This process samples every server
process's CPU (HAProxy's included), Redis's and the whole machine's at the window's edges.

A level passes when the gap p99 is at most ``GAP_BOUND_MS``, the first token's p99 at most
``TTFT_BOUND_MS`` and no stream failed. The first-token bound is what makes "keeps up" mean
something with users who wait for their answer before asking again: a server past its capacity
slows the next questions' starts, not the open streams' tokens, so K users settle at a later
first token while the gaps stay near 50 ms and the tokens per second stop growing. Per side K
grows by ``growth`` from ``start_k`` until a level fails, then bisects (geometrically) between
the largest pass and the smallest failure until they are within ``resolution``; the sides probe
in turn, the first of each turn rotating, so a drifting machine hits them alike. A side's
throughput is the tokens per second of its best passing level.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import Any

from agent_ng.bench.load_client import on_fast_loop, one_stream, ours_token
from agent_ng.bench.measure import Result, Table, free_port, label_panel, plain_numbers, rotated, save_figure
from agent_ng.bench.replicas import REDIS_URL, own_redis_prefix
from agent_ng.bench.service import MAX_RUNS, STARTUP_GUARD_S, TICKS, cpu_s, percentile, stop, tree, wait_ready

NAME = "scaling"
RATE = 20.0
GAP_BOUND_MS = 100.0
TTFT_BOUND_MS = 1_000.0
"""About half the full size's answer (40 tokens at 20 tokens/s): past it the users' questions
wait on a server that no longer keeps up."""
HAPROXY_CFG = Path(os.environ.get("AGENT_BENCH_HAPROXY_CFG", Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"))
"""The balancer's configuration: the one ``deploy/`` ships unless the environment names another
(to measure a change to it side by side with the rest)."""
WARMUP_K = 2
"""Streams each side serves, all sides at once, before the first probe: first-run costs
(imports on first use, the checkpointer's tables) are not a probe's."""
REDIS_POOL = 2_000
"""Connections each process's Redis client may hold (``max_connections`` in ``AGENT_REDIS_URL``).
Before the event log shared its appends and its ``XREAD BLOCK`` (``agent_ng.service.redis_shared``)
redis-py's default, 100, ran out at about 50 open streams per process; kept so that a burst of
the log's other calls (a run's open, its holder, a join's look-up) never waits for the pool."""
RETRY_AFTER_ERROR_S = 0.5
"""A user whose stream failed waits this long before its next question, so a failing server
is not asked in a tight loop."""


@dataclass(frozen=True)
class Size:
    tokens: int
    start_k: int
    growth: float
    resolution: float
    """Bisection stops when the smallest failing K is within this factor of the largest pass."""
    max_probes: int
    """Per side: bounds the run whatever the levels show."""
    min_k: int
    """A side failing at ``start_k`` is probed lower down to here, no further."""
    window_s: float

    @property
    def answer_s(self) -> float:
        return (self.tokens - 1) / RATE

    @property
    def warmup_s(self) -> float:
        """The spread of the users' first questions (one answer's length), and a second to settle."""
        return self.answer_s + 1.0


SIZES = {
    "full": Size(tokens=40, start_k=80, growth=1.5, resolution=1.12, max_probes=8, min_k=20, window_s=5.0),
    "smoke": Size(tokens=5, start_k=2, growth=2.0, resolution=2.0, max_probes=2, min_k=1, window_s=0.5),
}


@dataclass(frozen=True)
class Side:
    name: str
    processes: int
    """Server processes serving the streams."""
    balanced: bool
    """Replicas behind HAProxy; else ``processes`` uvicorn workers on one port."""
    redis: bool


SIDES = (
    Side("one process", 1, balanced=False, redis=False),
    Side("one process, Redis log", 1, balanced=False, redis=True),
    Side("--workers 2", 2, balanced=False, redis=True),
    Side("2 replicas + HAProxy", 2, balanced=True, redis=True),
)
BASELINE, SAME_STORES = SIDES[0].name, SIDES[1].name


# --- the load client (its own process) ----------------------------------------------------------


async def users(url: str, k: int, tokens: int, rate: float, warmup_s: float, window_s: float) -> dict[str, Any]:
    """K users asking one question after another; what arrived in the window. Prints ``window``
    on a line of its own as the window opens and as it closes."""
    spread = (tokens - 1) / rate
    start = perf_counter()
    opens, closes = start + warmup_s, start + warmup_s + window_s
    arrived: list[float] = []
    gaps: list[float] = []
    ttfts: list[float] = []
    errors: dict[str, int] = {}
    streams = 0

    async def user(i: int) -> None:
        nonlocal streams
        await asyncio.sleep(i * spread / k)
        while (began := perf_counter()) < closes:
            s = await one_stream(url, f"/threads/{uuid.uuid4()}/runs/stream", {"input": "go"}, ours_token, tokens)
            if s.error:
                errors[s.error] = errors.get(s.error, 0) + 1
                await asyncio.sleep(RETRY_AFTER_ERROR_S)
                continue
            streams += 1
            at = began + s.ttft_s
            if opens <= at <= closes:
                arrived.append(at)
                ttfts.append(s.ttft_s)
            for gap in s.gaps_s:
                at += gap
                if opens <= at <= closes:
                    arrived.append(at)
                    gaps.append(gap)

    async def edge(at: float) -> float:
        await asyncio.sleep(at - perf_counter())
        print("window", flush=True)
        return time.process_time()

    tasks = [asyncio.ensure_future(user(i)) for i in range(k)]
    cpu_open, cpu_close = await edge(opens), await edge(closes)
    await asyncio.gather(*tasks)
    return {
        "tokens_per_s": len(arrived) / window_s,
        "gap_p50_ms": percentile(gaps, 0.5) * 1e3,
        "gap_p99_ms": percentile(gaps, 0.99) * 1e3,
        "gap_max_ms": max(gaps, default=float("nan")) * 1e3,
        "ttft_p50_ms": percentile(ttfts, 0.5) * 1e3,
        "ttft_p99_ms": percentile(ttfts, 0.99) * 1e3,
        "client_cores": (cpu_close - cpu_open) / window_s,
        "streams": streams,
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


# --- the servers ---------------------------------------------------------------------------------


@dataclass
class Target:
    """Where a side's load goes and the processes whose CPU is the side's (their trees)."""

    side: Side
    url: str
    pids: list[int]


STARTED = b"Application startup complete."
"""What uvicorn logs (INFO) once a worker's lifespan has started: it is serving."""


@asynccontextmanager
async def server(workers: int, tokens: int, env: dict[str, str], log_path: Path) -> AsyncIterator[tuple[str, int]]:
    """``agent_ng.bench.scaling_server`` with ``workers`` workers: its URL and pid once every
    worker serves."""
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent_ng.bench.scaling_server", str(workers), str(tokens), str(RATE),
            stdout=asyncio.subprocess.PIPE, stderr=log, env=env, start_new_session=True,
        )

    def tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_GUARD_S)
        if not line.strip():
            raise RuntimeError(f"agent_ng.bench.scaling_server exited before it bound a port:\n{tail()}")
        url = f"http://127.0.0.1:{int(line)}"
        await wait_ready(f"{url}/healthz", process, tail)
        async with asyncio.timeout(STARTUP_GUARD_S):
            while log_path.read_bytes().count(STARTED) < workers:
                if process.returncode is not None:
                    raise RuntimeError(f"agent_ng.bench.scaling_server exited:\n{tail()}")
                await asyncio.sleep(0.1)
        yield url, process.pid
    finally:
        await stop(process)


def haproxy_executable() -> str:
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)
    if found is None:
        raise RuntimeError("the scaling bench needs haproxy (apt-get install haproxy) for its replicas side")
    return found


@asynccontextmanager
async def balancer(addresses: list[str], scratch: Path) -> AsyncIterator[tuple[str, int]]:
    """``haproxy -f deploy/haproxy.cfg`` in front of ``addresses`` (host:port): its URL and pid
    once its own checks found every replica up."""
    port = free_port()
    admin = scratch / "lb.sock"
    env = os.environ | {"LB_BIND": f"127.0.0.1:{port}", "LB_ADMIN_SOCKET": str(admin)}
    env |= {f"AGENT{i}_ADDR": address for i, address in enumerate(addresses, 1)}
    log_path = scratch / "haproxy.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            haproxy_executable(), "-f", str(HAPROXY_CFG), "-db", env=env, stdout=log, stderr=log,
            start_new_session=True,
        )
    try:
        names = [f"agent{i}" for i in range(1, len(addresses) + 1)]
        async with asyncio.timeout(STARTUP_GUARD_S):
            while not await checked_up(admin, names):
                if process.returncode is not None:
                    raise RuntimeError(f"haproxy exited:\n{log_path.read_text(errors='replace')[-3000:]}")
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        await stop(process)


async def checked_up(admin: Path, names: list[str]) -> bool:
    """Whether HAProxy's runtime API shows every one of ``names`` up by its own checks."""
    try:
        reader, writer = await asyncio.open_unix_connection(admin)
    except OSError:
        return False
    writer.write(b"show stat\n")
    text = (await reader.read()).decode()
    writer.close()
    header, *lines = text.lstrip("# ").splitlines()
    columns = header.split(",")
    rows = [dict(zip(columns, line.split(","), strict=False)) for line in lines if line]
    up = {r["svname"] for r in rows if r.get("status") == "UP" and r.get("check_status") == "L7OK"}
    return set(names) <= up


async def enter_all(stack: AsyncExitStack, contexts: list[Any]) -> list[Any]:
    """Enter the contexts at once (servers start in parallel); each one entered is left with
    ``stack`` even when another failed, whose error is raised once all are done."""
    entered = await asyncio.gather(*(stack.enter_async_context(c) for c in contexts), return_exceptions=True)
    if errors := [e for e in entered if isinstance(e, BaseException)]:
        raise errors[0]
    return entered


@asynccontextmanager
async def deployed(side: Side, tokens: int, env: dict[str, str], home: Path) -> AsyncIterator[Target]:
    """The side's servers (and balancer) up, on a checkpointer file in ``home``."""
    home.mkdir()
    env = env | {"AGENT_CHECKPOINT_URL": f"sqlite:///{home / 'checkpoints.db'}", "AGENT_DATA_DIR": str(home)}
    if not side.redis:
        env = {k: v for k, v in env.items() if not k.startswith("AGENT_REDIS_")}
    async with AsyncExitStack() as stack:
        if not side.balanced:
            url, pid = await stack.enter_async_context(server(side.processes, tokens, env, home / "server.log"))
            yield Target(side, url, [pid])
            return
        replicas = await enter_all(
            stack, [server(1, tokens, env, home / f"replica-{i}.log") for i in range(side.processes)]
        )
        url, pid = await stack.enter_async_context(
            balancer([address.removeprefix("http://") for address, _ in replicas], home)
        )
        yield Target(side, url, [pid, *(p for _, p in replicas)])


# --- one level -----------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


def own_cpu_s(pid: int) -> float:
    """The process's own CPU seconds (its children's not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Sampler:
    """The CPU of each of the side's processes, Redis's (when it is a process here) and the machine's."""

    target: Target
    redis_pid: int | None

    def sample(self) -> dict[str, Any]:
        processes = {pid: own_cpu_s(pid) for root in self.target.pids for pid in tree(root)}
        return {
            "processes": processes,
            "server": sum(processes.values()),
            "redis": cpu_s(self.redis_pid) if self.redis_pid is not None else float("nan"),
            "machine": machine_busy_s(),
            "wall": perf_counter(),
        }


async def level(target: Target, k: int, spec: Size, redis_pid: int | None) -> dict[str, Any]:
    """K users against the side for a warm-up and a window; the client's figures and the CPU."""
    sampler = Sampler(target, redis_pid)
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_ng.bench.scaling", target.url, str(k), str(spec.tokens), str(RATE),
        str(spec.warmup_s), str(spec.window_s), stdout=asyncio.subprocess.PIPE,
    )
    edges = []
    for _ in range(2):
        if (await client.stdout.readline()).strip() != b"window":
            break
        edges.append(sampler.sample())
    stdout, _ = await client.communicate()
    if client.returncode or len(edges) != 2:
        raise RuntimeError(f"the load client failed against {target.side.name} at K = {k}")
    report = json.loads(stdout)
    first, last = edges
    wall = last["wall"] - first["wall"]
    cores = {f"{what}_cores": (last[what] - first[what]) / wall for what in ("server", "redis", "machine")}
    tokens = report["tokens_per_s"] * spec.window_s
    row = {"side": target.side.name, "k": k, "at": first["wall"], **report, **cores}
    row["process_cores"] = sorted(
        ((last["processes"][pid] - was) / wall for pid, was in first["processes"].items() if pid in last["processes"]),
        reverse=True,
    )
    row["server_us_per_token"] = (last["server"] - first["server"]) / tokens * 1e6 if tokens else float("nan")
    row["passed"] = (
        row["errors"] == 0 and tokens > 0 and row["gap_p99_ms"] <= GAP_BOUND_MS and row["ttft_p99_ms"] <= TTFT_BOUND_MS
    )
    return row


# --- the search ----------------------------------------------------------------------------------


@dataclass
class Search:
    """One side's ramp: K up by ``growth`` until a failure, then bisection down to ``resolution``."""

    target: Target
    spec: Size
    probes: list[dict[str, Any]] = field(default_factory=list)

    def best(self) -> dict[str, Any] | None:
        return max((p for p in self.probes if p["passed"]), key=lambda p: p["tokens_per_s"], default=None)

    def next_k(self) -> int | None:
        if len(self.probes) >= self.spec.max_probes:
            return None
        passed = max((p["k"] for p in self.probes if p["passed"]), default=None)
        failed = min((p["k"] for p in self.probes if not p["passed"]), default=None)
        if passed is None and failed is None:
            return self.spec.start_k
        if failed is None:
            return max(passed + 1, round(passed * self.spec.growth))
        if passed is None:
            k = round(failed / self.spec.growth)
            return k if self.spec.min_k <= k < failed else None
        if failed / passed <= self.spec.resolution or failed - passed <= 1:
            return None
        return min(failed - 1, max(passed + 1, round(math.sqrt(passed * failed))))


async def redis_process(redis: Any) -> int | None:
    """Redis's pid when it runs on this machine (its CPU then counts), else None."""
    pid = int((await redis.info("server"))["process_id"])
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def side_env() -> dict[str, str]:
    """The environment every side's servers start with: this one's, less the agent's and the
    model's settings, plus the stores they share (``AGENT_REDIS_PREFIX`` is each side's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "OPENAI_"))}
    redis_url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}max_connections={REDIS_POOL}"
    return env | {"AGENT_CACHE_URL": "memory://", "AGENT_MAX_RUNS": str(MAX_RUNS), "AGENT_REDIS_URL": redis_url}


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as scratch:
        async with AsyncExitStack() as stack:
            redis, prefix = await stack.enter_async_context(own_redis_prefix())
            redis_pid = await redis_process(redis)
            env = side_env()
            targets = await enter_all(stack, [
                deployed(side, spec.tokens, env | {"AGENT_REDIS_PREFIX": f"{prefix}{i}:"}, Path(scratch, f"side-{i}"))
                for i, side in enumerate(SIDES)
            ])
            warmup = replace(spec, window_s=0.1)
            await asyncio.gather(*(level(t, WARMUP_K, warmup, redis_pid) for t in targets))
            searches = [Search(target, spec) for target in targets]
            turn = 0
            while pending := [s for s in searches if s.next_k() is not None]:
                for search in rotated(pending, turn):
                    search.probes.append(await level(search.target, search.next_k(), spec, redis_pid))
                turn += 1
    return result(spec, size, searches)


def result(spec: Size, size: str, searches: list[Search]) -> Result:
    best = {s.target.side.name: s.best() for s in searches}
    base = {name: best[name]["tokens_per_s"] if best[name] else None for name in (BASELINE, SAME_STORES)}
    columns = ["tokens/s", "gap p50 (ms)", "gap p99 (ms)", "TTFT p50 (ms)", "TTFT p99 (ms)", "server CPU (cores)",
               "per process (cores)", "server CPU per token (us)", "Redis CPU (cores)", "client CPU (cores)",
               "machine CPU (cores)"]

    def headline_row(search: Search) -> list[Any]:
        side, row = search.target.side, best[search.target.side.name]
        if row is None:
            return [side.name, side.processes, "none passed", None, None, *[None] * len(columns), len(search.probes)]
        ratios = [round(row["tokens_per_s"] / b, 2) if b else None for b in base.values()]
        return [
            side.name, side.processes, row["k"], *ratios, round(row["tokens_per_s"]), round(row["gap_p50_ms"], 1),
            round(row["gap_p99_ms"], 1), round(row["ttft_p50_ms"], 1), round(row["ttft_p99_ms"], 1),
            round(row["server_cores"], 2), " / ".join(f"{c:.2f}" for c in row["process_cores"]),
            round(row["server_us_per_token"]), round(row["redis_cores"], 2),
            round(row["client_cores"], 2), round(row["machine_cores"], 2), len(search.probes),
        ]

    headline = Table(
        f"Scaling: the most tokens/s delivered with the gap p99 at most {GAP_BOUND_MS:g} ms, the first token's "
        f"p99 at most {TTFT_BOUND_MS:,.0f} ms and no errors; "
        f"K concurrent streams of {spec.tokens} tokens at {RATE:g} tokens/s (each a question on a new thread, "
        f"the next at once), counted over a {spec.window_s:g} s window; an SQLite checkpointer on every side, "
        f"Redis clients with a pool of {REDIS_POOL:,}",
        ["side", "processes", "K", f"x {BASELINE}", f"x {SAME_STORES}", *columns, "probes"],
        [headline_row(s) for s in searches],
        note=f"K is found per side: x{spec.growth:g} from K = {spec.start_k} until a level fails, then bisected "
        f"to within x{spec.resolution:g}, so a ratio is good to about that. Server CPU: the side's processes "
        "(uvicorn's parent and workers; both replicas and HAProxy) over the window, and each of them, the busiest "
        "first; per token: over the tokens "
        "delivered in it. Redis, the load client and the whole machine (every process, other users' too) are "
        "beside it: they all share the cores.",
    )
    probes = Table(
        "Every level probed, in the order run",
        ["side", "K", "tokens/s", "gap p99 (ms)", "gap max (ms)", "TTFT p99 (ms)", "server CPU (cores)",
         "machine CPU (cores)", "errors", "passed"],
        [
            [p["side"], p["k"], round(p["tokens_per_s"]), round(p["gap_p99_ms"], 1), round(p["gap_max_ms"], 1),
             round(p["ttft_p99_ms"], 1), round(p["server_cores"], 2), round(p["machine_cores"], 2), p["errors"],
             "yes" if p["passed"] else "no"]
            for p in sorted((p for s in searches for p in s.probes), key=lambda p: p["at"])
        ],
    )
    data = {
        "rate": RATE,
        "tokens": spec.tokens,
        "gap_bound_ms": GAP_BOUND_MS,
        "ttft_bound_ms": TTFT_BOUND_MS,
        "sides": [s.name for s in SIDES],
        "best": best,
        "probes": [p for s in searches for p in s.probes],
    }
    return Result(NAME, size, [headline, probes], data)


def plot(result: Result, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = result.data["probes"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    panels = (("tokens_per_s", "tokens/s delivered"), ("gap_p99_ms", "gap between tokens, p99 (ms)"),
              ("ttft_p99_ms", "first token, p99 (ms)"), ("server_cores", "server CPU (cores)"))
    bounds = {"gap_p99_ms": result.data["gap_bound_ms"], "ttft_p99_ms": result.data["ttft_bound_ms"]}
    for ax, (key, title) in zip(axes, panels, strict=True):
        for side, color in zip(result.data["sides"], ("tab:blue", "tab:cyan", "tab:red", "tab:green"), strict=True):
            mine = sorted((p for p in probes if p["side"] == side), key=lambda p: p["k"])
            ax.plot([p["k"] for p in mine], [p[key] for p in mine], "-", color=color, label=side, alpha=0.6)
            for p in mine:
                ax.plot(p["k"], p[key], "o" if p["passed"] else "x", color=color)
        if key in bounds:
            ax.axhline(bounds[key], color="black", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        plain_numbers(ax.xaxis)
        label_panel(ax, title, "concurrent streams K (o passed, x failed)")
    fig.suptitle(f"Scaling: {result.data['tokens']} tokens at {result.data['rate']:g} tokens/s per stream, "
                 f"{result.machine['nproc']} cores")
    return save_figure(fig, directory, NAME)


if __name__ == "__main__":
    url, k, tokens, rate, warmup_s, window_s = sys.argv[1:7]
    report = on_fast_loop(users(url, int(k), int(tokens), float(rate), float(warmup_s), float(window_s)))
    print(json.dumps(report))
