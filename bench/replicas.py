"""Benchmark 9: replicas. How fast a run outlives its replica, and what run records cost per run.

**Takeover.** For each lease setting (``AGENT_RUN_LEASE_S``, ``AGENT_RUN_POLL_S``) a cluster of
replicas, each a process of its own serving ``agent-ng serve``'s app
(``python -m agent_ng.bench.replicas TOKENS RATE``: ``create_app`` under uvicorn, settings from
the environment, the paced bench model), sharing a PostgreSQL schema of the bench's own and Redis
under a key prefix of its own. Per kill: a background run on an up replica (an answer of
``tokens`` tokens at 20 tokens/s), read from its Redis event log until it streams, then SIGKILL to
the replica the run table says holds it, and the log read on: the kill's time against the Redis
entry time of the ``run_start`` with ``attempt`` 2 (another replica took it over) and of the
``run_end``. The run table gives the lease left at the kill, so a takeover splits into the lease
running out and the claim after it. A killed replica restarts in the background when the kills
to come need it. The clusters of the settings run at once, side by side.

**Cost per run.** The same short runs (an answer of 20 tokens, unpaced; a turn of 3 parallel
instant tools) streamed by ``POST /threads/{id}/runs/stream``, one after another, each on a new
thread, by the app in this process (``httpx.ASGITransport``) on four set-ups: SQLite with runs in
the process (the single-process default), PostgreSQL with runs in the process (the run table
turned off: today's single-process service on PostgreSQL), PostgreSQL with the run table (what
replicas run), and that with the Redis event log. Per run: wall time p50, CPU (this process's:
the client's small share is the same for every side) and the SQL statements and explicit
transactions, counted in psycopg per side (each PostgreSQL side has its own schema). Sides
round-robin, several rounds, medians.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any
from unittest import mock
from weakref import WeakKeyDictionary

import httpx

from agent_ng.bench.measure import Result, Table, rotated, save_figure
from agent_ng.bench.service import STARTUP_GUARD_S, percentile, stop, wait_ready

NAME = "replicas"
RATE = 20.0
POSTGRES_URL = os.environ.get("AGENT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AGENT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TAKEOVER_GUARD = 3.0
"""A takeover later than this many times its bound is late: recorded with what the replicas and
the database showed then (``Cluster.snapshot``)."""
LATE_GUARD_S = 30.0
"""How much longer a late takeover is waited for; none by then fails the bench with the logs."""
TOOLS_QUESTION = "tools"
ANSWER_TOKENS = 20
TOOL_CALLS = 3


@dataclass(frozen=True)
class Setting:
    lease_s: float
    poll_s: float

    @property
    def bound_s(self) -> float:
        """How long a takeover may take by the settings: the lease, then a claim poll."""
        return self.lease_s + self.poll_s

    @property
    def label(self) -> str:
        return f"lease {self.lease_s:g} s, poll {self.poll_s:g} s"


@dataclass(frozen=True)
class Size:
    kills: int
    """Per setting."""
    replicas: int
    """Per cluster: with 3, a killed replica restarts while the next kills go on."""
    settings: tuple[Setting, ...]
    tokens: int
    """The taken-over run's answer, at ``RATE`` tokens/s: its new holder answers it again whole."""
    runs: int
    """Per side, workload and round of the cost part."""
    rounds: int
    idle_s: float
    """The idle window in which each side's background statements are counted."""


SETTINGS = (Setting(1.0, 0.2), Setting(5.0, 0.5))
SIZES = {
    "full": Size(20, 3, SETTINGS, 10, 10, 3, 3.0),
    "smoke": Size(1, 2, SETTINGS[:1], 10, 2, 1, 0.5),
}


# --- the replica process -------------------------------------------------------------------------


def serve(tokens: int, rate: float) -> None:
    """One replica: ``agent-ng serve``'s app over the paced bench model, settings from ``AGENT_*``;
    prints the free loopback port it bound, logs ``agent_ng`` at INFO (takeovers) to stderr."""
    import uvicorn

    from agent_ng.bench.models import TokenModel
    from agent_ng.collector import tune_collector
    from agent_ng.service.app import create_app
    from agent_ng.service.settings import ServiceSettings

    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    logging.getLogger("agent_ng").setLevel(logging.INFO)
    settings = ServiceSettings(cache_url="memory://", system_prompt="")
    app = create_app(settings, model=TokenModel(tokens=tokens, interval_s=1 / rate), tools=[])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    tune_collector()
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)).run(sockets=[sock])


@dataclass
class Replica:
    """One replica process of a cluster; after a kill it may start again (a new process, a new port)."""

    name: str
    env: dict[str, str]
    log_path: Path
    tokens: int
    process: asyncio.subprocess.Process | None = None
    url: str = ""
    starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent_ng.bench.replicas", str(self.tokens), str(RATE),
                stdout=asyncio.subprocess.PIPE, stderr=stderr, env=self.env, start_new_session=True,
            )
        line = await asyncio.wait_for(self.process.stdout.readline(), STARTUP_GUARD_S)
        if not line.strip():
            raise RuntimeError(f"replica {self.name} exited before it bound a port:\n{self.log()}")
        self.url = f"http://127.0.0.1:{int(line)}"
        await wait_ready(f"{self.url}/healthz", self.process, self.log)

    def restart_soon(self) -> None:
        self.starting = asyncio.ensure_future(self.start())

    @property
    def restarting(self) -> bool:
        return self.starting is not None and not self.starting.done()

    @property
    def up(self) -> bool:
        if self.starting is not None and self.starting.done() and (error := self.starting.exception()):
            raise error
        return not self.restarting and self.process is not None and self.process.returncode is None

    async def kill(self) -> float:
        """SIGKILL; the time it was sent (``time.time()``), once the process is gone."""
        assert self.process is not None
        killed = time.time()
        os.kill(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        return killed

    async def stop(self) -> None:
        if self.starting is not None and not self.starting.done():
            self.starting.cancel()
            await asyncio.gather(self.starting, return_exceptions=True)
        if self.process is not None:
            await stop(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def replica_env(db_url: str, prefix: str, setting: Setting, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "OPENAI_"))}
    return env | {
        "AGENT_CHECKPOINT_URL": db_url,
        "AGENT_REDIS_URL": REDIS_URL,
        "AGENT_REDIS_PREFIX": prefix,
        "AGENT_RUN_LEASE_S": str(setting.lease_s),
        "AGENT_RUN_POLL_S": str(setting.poll_s),
        "AGENT_DATA_DIR": str(home),
    }


# --- shared stores of the bench's own ------------------------------------------------------------


@asynccontextmanager
async def own_schema() -> AsyncIterator[tuple[str, str]]:
    """A schema of the bench's own on ``POSTGRES_URL``'s database (dropped after) and the URL
    whose ``search_path`` it is: replicas on it claim runs from its run table alone, never another
    test's or bench's."""
    import psycopg

    schema = f"bench_replicas_{uuid.uuid4().hex[:12]}"
    try:
        admin = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    except psycopg.OperationalError as e:
        raise RuntimeError(f"the replicas bench needs PostgreSQL at {POSTGRES_URL}: {e}".splitlines()[0]) from e
    async with admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options=-csearch_path%3D{schema}", schema
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")


@asynccontextmanager
async def own_redis_prefix() -> AsyncIterator[tuple[Any, str]]:
    """A Redis client and a key prefix of the bench's own (its keys deleted after)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"agent-ng-bench-{uuid.uuid4().hex[:12]}:"
    try:
        await redis.ping()
    except OSError as e:
        raise RuntimeError(f"the replicas bench needs Redis at {REDIS_URL}: {e}") from e
    try:
        yield redis, prefix
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


# --- takeover ------------------------------------------------------------------------------------


@dataclass
class RunLog:
    """A run's event log as Redis holds it, each wait reading on from where the last one stopped."""

    redis: Any
    key: str
    cursor: str = "0-0"
    seen: list[dict[str, Any]] = field(default_factory=list)
    _read: deque[tuple[float, dict[str, Any]]] = field(default_factory=deque)

    async def until(self, done: Callable[[dict[str, Any]], bool], timeout_s: float) -> float | None:
        """The entry time in Redis (ms resolution) of the next event ``done`` accepts; None if
        none comes within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            while self._read:
                at, event = self._read.popleft()
                self.seen.append(event)
                if done(event):
                    return at
            if (left := deadline - time.monotonic()) <= 0:
                return None
            got = await self.redis.xread({self.key: self.cursor}, block=max(1, int(min(left, 0.1) * 1000)), count=100)
            for self.cursor, fields in got[0][1] if got else ():
                self._read.append((int(self.cursor.split("-")[0]) / 1000, json.loads(fields["event"])))


def is_takeover(event: dict[str, Any]) -> bool:
    return event["type"] == "run_start" and event.get("attempt", 1) > 1


@dataclass
class Cluster:
    """The replicas of one lease setting, an open connection to their schema (the run table)
    and their Redis prefix."""

    setting: Setting
    replicas: list[Replica]
    db: Any
    redis: Any
    prefix: str
    tokens: int
    client: httpx.AsyncClient

    def logs(self) -> str:
        return "\n".join(f"--- {r.name} ({r.log_path}) ---\n{r.log()}" for r in self.replicas)

    async def row(self, run_id: str) -> dict[str, Any] | None:
        cursor = await self.db.execute(
            "SELECT status, attempt, holder, extract(epoch FROM lease_until)::float8 AS lease_until"
            " FROM agent_ng_runs WHERE run_id = %s",
            (run_id,),
        )
        return await cursor.fetchone()

    async def holder(self, run_id: str) -> Replica:
        """The replica the run table says holds the run (``<host>:<pid>:<hex>``)."""
        row = await self.row(run_id)
        pid = int(row["holder"].split(":")[-2]) if row and row["holder"] else None
        for r in self.replicas:
            if r.process is not None and r.process.pid == pid:
                return r
        raise RuntimeError(f"run {run_id} is held by {row}, none of this cluster's replicas")

    def taker(self, run_id: str) -> str | None:
        """The replica whose log says it took the run over."""
        for r in self.replicas:
            lines = r.log_path.read_text(errors="replace").splitlines()
            if any(run_id in line and "taken over" in line for line in lines):
                return r.name
        return None

    async def kill_once(self, number: int, remaining: int) -> dict[str, Any]:
        """Start a run on an up replica (two up at least; the first up in a rotation), kill its
        holder once it streams, follow its log to its end. The holder restarts in the background
        when the ``remaining`` kills need it."""
        while sum(r.up for r in self.replicas) < 2:
            await asyncio.wait([r.starting for r in self.replicas if r.restarting], return_when=asyncio.FIRST_COMPLETED)
        target = next(r for r in rotated(self.replicas, number) if r.up)
        response = await self.client.post(f"{target.url}/threads/{uuid.uuid4()}/runs", json={"input": "go"})
        response.raise_for_status()
        run_id = response.json()["run_id"]
        log = RunLog(self.redis, f"{self.prefix}run:{run_id}:events")
        if await log.until(lambda e: e["type"] == "content", STARTUP_GUARD_S) is None:
            raise RuntimeError(f"run {run_id} did not stream: {[e['type'] for e in log.seen]}\n{self.logs()}")
        victim = await self.holder(run_id)
        killed = await victim.kill()
        lease_until = (await self.row(run_id))["lease_until"]
        guard_s = TAKEOVER_GUARD * self.setting.bound_s
        late = None
        if (taken := await log.until(is_takeover, guard_s)) is None:
            late = await self.snapshot(run_id)
            if (taken := await log.until(is_takeover, LATE_GUARD_S)) is None:
                raise RuntimeError(
                    f"[{self.setting.label}] run {run_id}: no run_start with attempt 2 within "
                    f"{guard_s + LATE_GUARD_S:g} s of killing {victim.name}; events seen: "
                    f"{[e['type'] for e in log.seen]}; at {guard_s:g} s: {late}; run table now: "
                    f"{await self.row(run_id)}\n{self.logs()}"
                )
        ended = await log.until(lambda e: e["type"] == "run_end", STARTUP_GUARD_S)
        if ended is None:
            raise RuntimeError(f"run {run_id} did not end after its takeover\n{self.logs()}")
        if remaining >= sum(r.up or r.restarting for r in self.replicas):
            victim.restart_soon()
        final = await self.row(run_id)
        return {
            "setting": self.setting.label,
            "kill": number,
            "run_id": run_id,
            "killed": victim.name,
            "taken_by": self.taker(run_id),
            "takeover_s": taken - killed,
            "run_end_s": ended - killed,
            "lease_left_s": lease_until - killed,
            "claim_after_lapse_s": taken - lease_until,
            "status": final["status"],
            "attempt": final["attempt"],
            "run_starts": sum(e["type"] == "run_start" for e in log.seen),
            "late": late,
        }

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        """What the replicas and the database show when a takeover is late: each replica's
        state, the run's row, its replicas' database sessions and their locks on the run table."""
        pids = [r.process.pid for r in self.replicas if r.process is not None]
        sessions = await self.db.execute(
            "SELECT pid, application_name, state, wait_event_type, wait_event,"
            " extract(epoch FROM now() - xact_start)::float8 AS in_transaction_s, left(query, 160) AS query"
            " FROM pg_stat_activity WHERE application_name ~ %s",
            (f"^agent-ng .*:({'|'.join(map(str, pids))}):",),
        )
        locks = await self.db.execute(
            "SELECT pid, mode, granted FROM pg_locks WHERE relation = 'agent_ng_runs'::regclass"
        )
        return {
            "replicas": [
                {"name": r.name, "pid": r.process.pid if r.process else None, "up": r.up, "restarting": r.restarting}
                for r in self.replicas
            ],
            "row": await self.row(run_id),
            "sessions": await sessions.fetchall(),
            "locks": await locks.fetchall(),
        }


async def takeovers(setting: Setting, spec: Size, scratch: Path) -> list[dict[str, Any]]:
    """``spec.kills`` kills in a cluster of ``spec.replicas`` replicas on ``setting``."""
    import psycopg
    from psycopg.rows import dict_row

    async with AsyncExitStack() as stack:
        db_url, _ = await stack.enter_async_context(own_schema())
        redis, prefix = await stack.enter_async_context(own_redis_prefix())
        db = await stack.enter_async_context(
            await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)
        )
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        home = scratch / f"lease-{setting.lease_s:g}"
        home.mkdir()
        env = replica_env(db_url, prefix, setting, home)
        replicas = [Replica(f"{home.name}-r{i + 1}", env, home / f"r{i + 1}.log", spec.tokens)
                    for i in range(spec.replicas)]
        stack.push_async_callback(lambda: asyncio.gather(*(r.stop() for r in replicas)))
        await asyncio.gather(*(r.start() for r in replicas))
        cluster = Cluster(setting, replicas, db, redis, prefix, spec.tokens, client)
        return [await cluster.kill_once(k, spec.kills - k - 1) for k in range(spec.kills)]


def takeover_row(setting: Setting, kills: list[dict[str, Any]], replicas: int) -> dict[str, Any]:
    takeover = [k["takeover_s"] for k in kills]
    claim = [k["claim_after_lapse_s"] for k in kills]
    ended = [k["run_end_s"] for k in kills]
    return {
        "setting": setting.label,
        "lease_s": setting.lease_s,
        "poll_s": setting.poll_s,
        "bound_s": setting.bound_s,
        "replicas": replicas,
        "kills": len(kills),
        "takeover_p50_s": median(takeover),
        "takeover_max_s": max(takeover),
        "lease_left_p50_s": median(k["lease_left_s"] for k in kills),
        "claim_after_lapse_p50_s": median(claim),
        "claim_after_lapse_max_s": max(claim),
        "run_end_p50_s": median(ended),
        "run_end_max_s": max(ended),
        "continued": sum(k["status"] == "done" and k["attempt"] == 2 and k["run_starts"] == 2 for k in kills),
        "late": sum(k["late"] is not None for k in kills),
    }


# --- cost per run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    name: str
    postgres: bool
    run_table: bool
    redis: bool


SIDES = (
    Side("SQLite, runs in the process", postgres=False, run_table=False, redis=False),
    Side("PostgreSQL, runs in the process", postgres=True, run_table=False, redis=False),
    Side("PostgreSQL + run table", postgres=True, run_table=True, redis=False),
    Side("PostgreSQL + run table + Redis log", postgres=True, run_table=True, redis=True),
)
BASELINE = SIDES[1].name
"""Today's single-process service on PostgreSQL: what the run table's cost is measured against."""
WORKLOADS = {"answer": f"{ANSWER_TOKENS} tokens", TOOLS_QUESTION: f"{TOOL_CALLS} parallel tools"}


def scripted_model() -> Any:
    """The unpaced answer of ``ANSWER_TOKENS`` tokens, or, asked ``TOOLS_QUESTION``, a turn of
    ``TOOL_CALLS`` parallel calls of ``work`` and a one-word answer."""
    from langchain_core.messages import HumanMessage

    from agent_ng.bench.models import TokenModel, ToolTurnModel

    class Scripted(TokenModel):
        tool_turn: ToolTurnModel = ToolTurnModel(calls=TOOL_CALLS)

        async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
            question = next(m.content for m in messages if isinstance(m, HumanMessage))
            if question == TOOLS_QUESTION:
                chunks = self.tool_turn._astream(messages, stop, run_manager, **kwargs)
            else:
                chunks = super()._astream(messages, stop, run_manager, **kwargs)
            async for chunk in chunks:
                yield chunk

    return Scripted(tokens=ANSWER_TOKENS)


def work_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    async def work(i: int) -> str:
        """Answer at once: a tool that costs nothing of its own."""
        return str(i)

    return work


@contextmanager
def counted_queries() -> Iterator[Counter]:
    """Count what psycopg sends, per connection options (each PostgreSQL side's ``search_path``):
    ``("statements", options)`` (each ``execute``, each parameter set of ``executemany``) and
    ``("transactions", options)`` (explicit ones, each a ``BEGIN`` and a ``COMMIT`` more; every
    other statement commits on its own)."""
    import psycopg

    counts: Counter = Counter()
    options: WeakKeyDictionary = WeakKeyDictionary()
    execute, executemany = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany
    enter = psycopg.AsyncTransaction.__aenter__

    def side(conn: Any) -> str:
        if (found := options.get(conn)) is None:
            found = options[conn] = conn.info.get_parameters().get("options", "")
        return found

    async def counted_execute(self, query, params=None, **kwargs):
        counts["statements", side(self._conn)] += 1
        return await execute(self, query, params, **kwargs)

    async def counted_executemany(self, query, params_seq, **kwargs):
        params_seq = list(params_seq)
        counts["statements", side(self._conn)] += len(params_seq)
        return await executemany(self, query, params_seq, **kwargs)

    async def counted_enter(self):
        counts["transactions", side(self._conn)] += 1
        return await enter(self)

    with (
        mock.patch.object(psycopg.AsyncCursor, "execute", counted_execute),
        mock.patch.object(psycopg.AsyncCursor, "executemany", counted_executemany),
        mock.patch.object(psycopg.AsyncTransaction, "__aenter__", counted_enter),
    ):
        yield counts


async def no_run_table(saver: Any, settings: Any) -> None:
    """``agent_ng.service.app.shared_runs`` turned off: runs live in the process, as before replicas."""
    return None


@dataclass
class Opened:
    side: Side
    client: httpx.AsyncClient
    options: str | None
    """Its PostgreSQL connections' ``options`` (what ``counted_queries`` counts by); None on SQLite."""


async def open_side(side: Side, stack: AsyncExitStack, scratch: Path) -> Opened:
    """The service app of ``side`` in this process, started (its lifespan entered), and a client."""
    from agent_ng.service.app import create_app
    from agent_ng.service.settings import ServiceSettings

    options = None
    if side.postgres:
        url, schema = await stack.enter_async_context(own_schema())
        options = f"-csearch_path={schema}"
    else:
        url = f"sqlite:///{scratch / 'checkpoints.db'}"
    prefix = None
    if side.redis:
        _, prefix = await stack.enter_async_context(own_redis_prefix())
    settings = ServiceSettings(
        checkpoint_url=url, cache_url="memory://", system_prompt="", data_dir=scratch,
        redis_url=REDIS_URL if side.redis else None, redis_prefix=prefix or "agent-ng:",
    )
    app = create_app(settings, model=scripted_model(), tools=[work_tool()])
    with mock.patch("agent_ng.service.app.shared_runs", no_run_table) if not side.run_table else nullcontext():
        await stack.enter_async_context(app.router.lifespan_context(app))
    transport = httpx.ASGITransport(app=app)
    client = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1"))
    return Opened(side, client, options)


async def one_run(client: httpx.AsyncClient, question: str) -> tuple[float, str | None]:
    """One streamed run on a new thread: its wall time and its ``run_end``'s status."""
    started, event, status = time.perf_counter(), "", None
    async with client.stream("POST", f"/threads/{uuid.uuid4()}/runs/stream", json={"input": question}) as response:
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "run_end":
                status = json.loads(line[5:])["status"]
    return time.perf_counter() - started, status


async def batch(opened: Opened, question: str, runs: int, counts: Counter, round_: int) -> dict[str, Any]:
    """``runs`` runs one after another: their wall times, CPU and database traffic per run."""
    before, cpu = counts.copy(), time.process_time()
    walls, errors = [], 0
    for _ in range(runs):
        wall, status = await one_run(opened.client, question)
        walls.append(wall)
        errors += status != "done"
    cpu = time.process_time() - cpu
    db = opened.options
    return {
        "side": opened.side.name,
        "run": question,
        "round": round_,
        "walls_ms": [w * 1e3 for w in walls],
        "cpu_ms_per_run": cpu / runs * 1e3,
        "statements_per_run": (counts["statements", db] - before["statements", db]) / runs if db else None,
        "transactions_per_run": (counts["transactions", db] - before["transactions", db]) / runs if db else None,
        "errors": errors,
    }


async def costs(spec: Size, scratch: Path) -> tuple[list[dict], dict[str, float | None]]:
    """Every side's batches, round-robin; and each side's statements per second while idle."""
    batches: list[dict] = []
    with counted_queries() as counts:
        async with AsyncExitStack() as stack:
            sides = []
            for i, side in enumerate(SIDES):
                home = scratch / f"side-{i}"
                home.mkdir()
                sides.append(await open_side(side, stack, home))
            for opened in sides:
                for question in WORKLOADS:
                    await batch(opened, question, 1, counts, -1)
            before = counts.copy()
            await asyncio.sleep(spec.idle_s)
            idle = {
                o.side.name: (counts["statements", o.options] - before["statements", o.options]) / spec.idle_s
                if o.options else None
                for o in sides
            }
            for round_ in range(spec.rounds):
                for opened in rotated(sides, round_):
                    for question in WORKLOADS:
                        batches.append(await batch(opened, question, spec.runs, counts, round_))
    return batches, idle


def cost_rows(batches: list[dict], idle: dict[str, float | None]) -> list[dict[str, Any]]:
    rows = []
    for question in WORKLOADS:
        for side in SIDES:
            mine = [b for b in batches if b["side"] == side.name and b["run"] == question]
            walls = [w for b in mine for w in b["walls_ms"]]
            statements = [b["statements_per_run"] for b in mine]
            transactions = [b["transactions_per_run"] for b in mine]
            rows.append({
                "side": side.name,
                "run": question,
                "runs": len(walls),
                "wall_p50_ms": percentile(walls, 0.5),
                "cpu_ms_per_run": median(b["cpu_ms_per_run"] for b in mine),
                "statements_per_run": median(statements) if statements[0] is not None else None,
                "transactions_per_run": median(transactions) if transactions[0] is not None else None,
                "idle_statements_per_s": idle[side.name],
                "errors": sum(b["errors"] for b in mine),
            })
    for row in rows:
        base = next(r for r in rows if r["side"] == BASELINE and r["run"] == row["run"])
        row["wall_x"] = row["wall_p50_ms"] / base["wall_p50_ms"]
        row["cpu_x"] = row["cpu_ms_per_run"] / base["cpu_ms_per_run"]
    return rows


# --- the benchmark -------------------------------------------------------------------------------


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as scratch:
        kills = await asyncio.gather(*(takeovers(s, spec, Path(scratch)) for s in spec.settings))
        batches, idle = await costs(spec, Path(scratch))
    takeover_rows = [takeover_row(s, k, spec.replicas) for s, k in zip(spec.settings, kills, strict=True)]
    rows = cost_rows(batches, idle)
    tables = [
        Table(
            f"Takeover after SIGKILL: {spec.kills} kills per setting, {spec.replicas} replicas per setting "
            f"(processes, PostgreSQL run table, Redis event log), a background run of {spec.tokens} tokens at "
            f"{RATE:g} tokens/s killed as it streams; the settings' clusters side by side",
            ["setting", "bound (s)", "kill -> run_start attempt 2, p50 (s)", "max (s)", "max / bound",
             "lease left at kill p50 (s)", "claim after lapse p50 (s)", "max (s)",
             "kill -> run_end p50 (s)", "max (s)", f"late (> {TAKEOVER_GUARD:g}x bound)", "continued, done"],
            [
                [r["setting"], r["bound_s"], round(r["takeover_p50_s"], 2), round(r["takeover_max_s"], 2),
                 round(r["takeover_max_s"] / r["bound_s"], 2), round(r["lease_left_p50_s"], 2),
                 round(r["claim_after_lapse_p50_s"], 3), round(r["claim_after_lapse_max_s"], 3),
                 round(r["run_end_p50_s"], 2), round(r["run_end_max_s"], 2), r["late"],
                 f"{r['continued']} / {r['kills']}"]
                for r in takeover_rows
            ],
            note="Times from the kill (SIGKILL sent) to the Redis entry of the other replica's run_start "
            "(attempt 2) and of the run's run_end. bound = lease + poll; the lease left at the kill "
            "(run table) is at most the lease, less the time since the last renewal (every lease / 3); "
            "claim after lapse = the rest: waiting for the next claim poll, the claim, fencing and "
            "evicting the dead holder, the graph's start. The new holder answers again from the last "
            "checkpoint (the input: an answer is not checkpointed mid-stream), so run_end comes "
            f"about {spec.tokens / RATE:g} s after the takeover. late: what the replicas and the database "
            "showed then is in the JSON (kills[].late). continued = attempt 2, status done, two run_starts "
            "in one log.",
        ),
        Table(
            f"Cost per run of the run records and leases: streamed runs one after another, each on a new thread, "
            f"{spec.runs} per side and round, {spec.rounds} rounds, sides round-robin; the app in this process",
            ["run", "side", "runs", "wall p50 (ms)", f"x {BASELINE}", "CPU per run (ms)", "x CPU",
             "statements per run", "transactions per run", "idle statements / s", "errors"],
            [
                [WORKLOADS[r["run"]], r["side"], r["runs"], round(r["wall_p50_ms"], 1), round(r["wall_x"], 2),
                 round(r["cpu_ms_per_run"], 1), round(r["cpu_x"], 2), r["statements_per_run"],
                 r["transactions_per_run"], r["idle_statements_per_s"], r["errors"]]
                for r in rows
            ],
            note="CPU is this process's (the client's share, the same for every side, included). Statements "
            "(each execute, each row of an executemany) and explicit transactions (each a BEGIN and a COMMIT "
            "more) are counted in psycopg, median of the rounds; they include the run table's claim polls "
            "and lease renewals during the runs, which go on while idle too (idle statements / s).",
        ),
    ]
    data = {
        "settings": [s.label for s in spec.settings],
        "kills": [k for ks in kills for k in ks],
        "takeover_rows": takeover_rows,
        "replicas": spec.replicas,
        "tokens": spec.tokens,
        "cost_rows": rows,
        "cost_batches": batches,
        "idle_statements_per_s": idle,
    }
    return Result(NAME, size, tables, data)


def plot(result: Result, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(10, 4.5))
    colors = ("tab:blue", "tab:red", "tab:green")
    for row, color in zip(result.data["takeover_rows"], colors, strict=False):
        mine = [k for k in result.data["kills"] if k["setting"] == row["setting"]]
        numbers = [k["kill"] + 1 for k in mine]
        ax.plot(numbers, [k["takeover_s"] for k in mine], "o", color=color,
                label=f"{row['setting']}: kill -> run_start attempt 2")
        ax.plot(numbers, [k["run_end_s"] for k in mine], "x", color=color, alpha=0.5,
                label=f"{row['setting']}: kill -> run_end")
        ax.axhline(row["bound_s"], color=color, linestyle="--", linewidth=1,
                   label=f"bound {row['bound_s']:g} s (lease + poll)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("kill")
    ax.set_ylabel("seconds after SIGKILL")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"Takeover of a killed replica's run, {result.data['replicas']} replicas per setting, "
                 f"{result.machine['nproc']} cores")
    return save_figure(fig, directory, NAME)


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
