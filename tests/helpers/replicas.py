"""Replicas behind a real HAProxy: ``agent-ng serve`` processes sharing PostgreSQL and Redis,
the balancer configured by ``deploy/haproxy.cfg``, and the model and web site their runs use.

    with fetch_site() as site, model_server({"fetch": [Reply(tool_calls=...), Reply(text="done")]}) as model, \\
         replicas(tmp_path, 2, model_url=model.base_url, redis_prefix=prefix) as cluster:
        r = httpx.post(f"{cluster.url}/threads/t1/runs", json={"input": "fetch"})
        r.headers["X-Agent-Server"]                   # the replica that answered: "agent1"
        a = await cluster.holder(r.json()["run_id"])  # the replica running the run
        a.kill()                                      # SIGKILL; also freeze, thaw, terminate, restart
        await cluster.balancer.until_status(a.name, "DOWN")

Each replica is a process of its own (``Replica``), started as an operator would start it, and
HAProxy (``Balancer``) is the one the docs recommend, filled in through its environment
variables; it names the replica that answered each request in ``X-Agent-Server``, and its
runtime API (a Unix socket) says which replicas it sees up and takes one out (``drain``) when a
test needs the next request to land elsewhere.

The replicas claim runs from the queue ``AGENT_RUN_QUEUE`` names, which they inherit from the
test (``tests/conftest.py`` gives each test its own), so replicas of two tests sharing the
PostgreSQL database never take over each other's runs.

The runs' tools reach ``FetchSite``, a local web site that counts every request per path and can
hold a request open until the test releases it (or its client goes away), so a test knows which
fetches ran, how often, and can keep a run mid-tools as long as it needs. The model is
``ModelByQuestion``, a scripted OpenAI-compatible server that picks the reply by the question, so
runs on several replicas at once each get their own script.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.helpers.hostile import MODEL_ENV
from tests.helpers.openai_server import OpenAIServer, Reply, ScriptedOpenAI, running_server
from tests.helpers.paths import REPO
from tests.helpers.ports import free_port
from tests.helpers.system import POSTGRES_URL, REDIS_URL

HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
BACKEND = "replicas"
"""The backend of ``deploy/haproxy.cfg`` whose servers are the replicas."""
STARTUP_S = 60.0
"""A replica imports for seconds of CPU; several at once on a busy machine take this long."""
STOP_S = 15.0
POLL_S = 0.05
REPLICA_ENV = {
    "AGENT_RUN_LEASE_S": "1",
    "AGENT_RUN_POLL_S": "0.2",
    "AGENT_DRAIN_S": "5",
    "AGENT_HTTP_ALLOW": "127.0.0.1",
}
"""Settings every replica gets unless a test gives its own: a lease that lapses within a
second, so a takeover happens within the few seconds a test may take, and ``http_fetch``
allowed to reach the test's site on loopback."""


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (returned); AssertionError naming
    ``what`` after ``timeout_s``. ``check`` may be a coroutine function."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(POLL_S)


@dataclass
class Replica:
    """One ``agent-ng serve`` process, known to the balancer as ``name``; its stderr in ``log_path``."""

    name: str
    port: int
    home: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The replica itself, bypassing the balancer."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "serve.log"

    def start(self) -> None:
        """Start the process (again, on the same port, after it was stopped); see ``wait_up``."""
        command = [str(Path(sys.executable).parent / "agent-ng"), "serve", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.home, env=self.env, stdout=log, stderr=log)

    def wait_up(self) -> None:
        """Block until the replica answers ``/healthz``; RuntimeError with its log if it exits."""
        deadline = time.monotonic() + STARTUP_S
        while True:
            if not self.alive:
                raise RuntimeError(f"replica {self.name} exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {self.name} did not start: {self.log()}")
            time.sleep(0.1)

    def restart(self) -> None:
        """Start a stopped (killed, terminated) replica again and wait until it answers."""
        assert not self.alive, f"replica {self.name} is still running"
        self.start()
        self.wait_up()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost machine: nothing of the process runs after it."""
        self._signal(signal.SIGKILL)
        self.process.wait(STOP_S)

    def freeze(self) -> None:
        """SIGSTOP: the process holds everything it had (its lease too) and does nothing."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        self._signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM, as an orchestrator stopping the replica: it drains, then exits (``wait_exit``)."""
        self._signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float = STOP_S) -> int:
        """The exit code, once the process has exited."""
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        """Stop it for good (SIGINT, then SIGKILL after ``STOP_S``), thawed first if frozen."""
        stop_all([self])

    def log(self) -> str:
        """The end of the replica's log, for a failing test to show (the balancer's checks left out)."""
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "GET /readyz" not in line)[-4000:]

    def _signal(self, sig: signal.Signals) -> None:
        assert self.alive, f"replica {self.name} is not running"
        self.process.send_signal(sig)


@dataclass
class Balancer:
    """The HAProxy process and its runtime API (``LB_ADMIN_SOCKET``)."""

    url: str
    process: subprocess.Popen
    admin_socket: Path
    log_path: Path

    def command(self, line: str) -> str:
        """One runtime API command (``show stat``, ``set server replicas/agent1 state drain``)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.admin_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """Each replica's row of ``show stat``, by server name (``status``: UP, DOWN, DRAIN, MAINT,
        or ``UP 1/2`` on its way down; ``check_status``: L7OK, L7STS, L4CON, L7TOUT...)."""
        text = self.command("show stat").removeprefix("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def status(self, name: str) -> str:
        return self.servers()[name]["status"]

    async def until_status(self, name: str, status: str, timeout_s: float = 10.0) -> float:
        """Wait until HAProxy shows ``name`` as ``status``; the seconds it took."""
        started = time.monotonic()
        try:
            await eventually(lambda: self.status(name) == status, f"HAProxy to see {name} {status}", timeout_s)
        except AssertionError as e:
            raise AssertionError(f"{e}; it is {self.status(name)}") from None
        return time.monotonic() - started

    def drain(self, name: str) -> None:
        """Send no new request to ``name`` (its open connections go on)."""
        self._set_state(name, "drain")

    def ready(self, name: str) -> None:
        """Undo ``drain``."""
        self._set_state(name, "ready")

    def _set_state(self, name: str, state: str) -> None:
        answer = self.command(f"set server {BACKEND}/{name} state {state}")
        assert not answer.strip(), answer

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    """The replicas, by name (``agent1``...), and the balancer in front of them."""

    replicas: dict[str, Replica]
    balancer: Balancer

    @property
    def url(self) -> str:
        """Where clients connect: the balancer."""
        return self.balancer.url

    async def holder(self, run_id: str, attempt: int = 1, timeout_s: float = 10.0) -> Replica | None:
        """The replica the run table says holds ``run_id``, once the run is in ``attempt`` (or a
        later one; ``attempt=2`` waits for a takeover); None when that attempt has already ended."""
        async def holding() -> tuple[Replica | None] | None:
            row = await run_row(run_id)
            if not row or row["attempt"] < attempt:
                return None
            if row["status"] != "running":
                return (None,)
            return (self.by_pid.get(int(row["holder"].split(":")[-2])),)

        (replica,) = await eventually(holding, f"run {run_id} to be held in attempt {attempt}", timeout_s)
        return replica

    @property
    def by_pid(self) -> dict[int, Replica]:
        return {r.pid: r for r in self.replicas.values() if r.process is not None}

    def logs(self) -> str:
        """Every replica's log and the balancer's, for a failing test's message."""
        parts = [f"--- {r.name} ---\n{r.log()}" for r in self.replicas.values()]
        return "\n".join([*parts, f"--- haproxy ---\n{self.balancer.log()}"])


@contextmanager
def replicas(
    tmp_path: Path,
    count: int = 2,
    *,
    model_url: str,
    redis_prefix: str,
    env: Mapping[str, str] = {},
) -> Iterator[Cluster]:
    """``count`` (2 or 3) replicas on PostgreSQL and Redis behind HAProxy, every one of them up.

    The replicas share the checkpointer and the run table (``POSTGRES_URL``, the test's
    ``AGENT_RUN_QUEUE``), the event log and cancels (``REDIS_URL`` under ``redis_prefix``, a test's own) and a tool
    store (one SQLite file: they are on one machine); each has its own data directory under
    ``tmp_path``. ``env`` adds or overrides ``AGENT_*`` settings (``REPLICA_ENV`` are the
    defaults). On exit the balancer is stopped, then every replica at once (thawed first).
    """
    assert 2 <= count <= 3, "deploy/haproxy.cfg has two servers and an optional third"
    shared = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    shared |= REPLICA_ENV | {
        "AGENT_CHECKPOINT_URL": POSTGRES_URL,
        "AGENT_REDIS_URL": REDIS_URL,
        "AGENT_REDIS_PREFIX": redis_prefix,
        "AGENT_CACHE_URL": f"sqlite:///{tmp_path / 'tools.db'}",
        "OPENAI_BASE_URL": model_url,
        "OPENAI_API_KEY": "test",
        "AGENT_MODEL": "test",
    }
    shared |= env
    started: dict[str, Replica] = {}
    with ExitStack() as stack:
        stack.callback(lambda: stop_all(started.values()))
        for number in range(1, count + 1):
            name = f"agent{number}"
            home = tmp_path / name
            home.mkdir()
            replica = Replica(name, free_port(), home, shared | {"AGENT_DATA_DIR": str(home)})
            started[name] = replica
            replica.start()
        for replica in started.values():
            replica.wait_up()
        balancer = stack.enter_context(haproxy(tmp_path, started))
        yield Cluster(started, balancer)


def stop_all(replicas: Iterable[Replica]) -> None:
    """Stop the replicas at once: SIGINT to each (thawed first), then SIGKILL to any still running
    after ``STOP_S``."""
    running = [r for r in replicas if r.alive]
    for replica in running:
        replica.thaw()
        replica.process.send_signal(signal.SIGINT)
    for replica in running:
        try:
            replica.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            replica.kill()


async def run_row(run_id: str) -> dict[str, Any] | None:
    """The run's record in the run table (``status``, ``attempt``, ``holder``...), or None."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, row_factory=dict_row) as conn:
        cursor = await conn.execute("SELECT * FROM agent_ng_runs WHERE run_id = %s", (run_id,))
        return await cursor.fetchone()


@contextmanager
def haproxy(tmp_path: Path, servers: Mapping[str, Replica]) -> Iterator[Balancer]:
    """``haproxy -f deploy/haproxy.cfg`` in the foreground, its servers filled in from ``servers``;
    yielded once it has checked every one of them up."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lb-") as short:  # a Unix socket path has 108 bytes at most
        admin = Path(short) / "admin.sock"
        env = {**os.environ, "LB_BIND": f"127.0.0.1:{port}", "LB_ADMIN_SOCKET": str(admin)}
        env |= {f"{name.upper()}_ADDR": f"127.0.0.1:{r.port}" for name, r in servers.items()}
        log_path = tmp_path / "haproxy.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["haproxy", "-f", str(HAPROXY_CFG), "-db"], env=env, stdout=log, stderr=log
            )
        balancer = Balancer(f"http://127.0.0.1:{port}", process, admin, log_path)
        try:
            wait_checked_up(balancer, list(servers))
            yield balancer
        finally:
            process.terminate()
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_checked_up(balancer: Balancer, names: Sequence[str]) -> None:
    """Block until HAProxy's own checks (not its start-up assumption) found every server up."""
    deadline = time.monotonic() + STARTUP_S
    while True:
        if balancer.process.poll() is not None:
            raise RuntimeError(f"haproxy exited: {balancer.log()}")
        try:
            rows = balancer.servers()
        except OSError:
            rows = {}
        if all(n in rows and (rows[n]["status"], rows[n]["check_status"]) == ("UP", "L7OK") for n in names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"haproxy did not see {names} up: {rows}\n{balancer.log()}")
        time.sleep(POLL_S)


@dataclass(eq=False)
class ModelByQuestion(ScriptedOpenAI):
    """A scripted model whose reply is the next one scripted for the run's question (the last
    user message), ``otherwise`` when none is left: runs on several replicas at once cannot
    take each other's replies."""

    by_question: dict[str, list[Reply]] = field(default_factory=dict)
    otherwise: Reply = Reply(text="ok")

    def take(self, body: dict[str, Any]) -> tuple[int, Reply | None]:
        question = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), None)
        with self._lock:
            self.requests.append(body)
            script = self.by_question.get(question) or []
            return len(self.requests), script.pop(0) if script else self.otherwise


@contextmanager
def model_server(by_question: Mapping[str, Sequence[Reply]]) -> Iterator[OpenAIServer]:
    """A ``ModelByQuestion`` server; ``.base_url`` for the replicas, ``.script.requests`` after."""
    script = ModelByQuestion(by_question={q: list(r) for q, r in by_question.items()})
    with running_server(script) as base_url:
        yield OpenAIServer(script, base_url)


@dataclass
class Fetch:
    """One request to the site: its path and its number among that path's requests (from 1)."""

    path: str
    number: int
    answered: bool = False
    closed: bool = False
    """The client went away while the request was held."""
    _release: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    @property
    def answer(self) -> str:
        """The body it is answered with, which names the request: ``/hang answer 2``."""
        return f"{self.path} answer {self.number}"


class FetchSite:
    """A local web site for ``http_fetch``: every request counted per path; a ``hold``-ed path
    keeps each request open until ``release`` (or its client closes the connection)."""

    def __init__(self, origin: str = "") -> None:
        self.origin = origin
        self.fetches: list[Fetch] = []
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def hold(self, path: str) -> None:
        """From now on, requests to ``path`` wait for ``release``."""
        with self._lock:
            self._held.add(path)

    def of(self, path: str) -> list[Fetch]:
        """The requests to ``path`` so far, in order."""
        with self._lock:
            return [f for f in self.fetches if f.path == path]

    def count(self, path: str) -> int:
        return len(self.of(path))

    def counts(self) -> dict[str, int]:
        """Requests per path."""
        with self._lock:
            paths = [f.path for f in self.fetches]
        return {p: paths.count(p) for p in dict.fromkeys(paths)}

    async def arrived(self, path: str, number: int = 1, timeout_s: float = 10.0) -> Fetch:
        """Wait for the ``number``-th request to ``path``."""
        found = await eventually(lambda: self.of(path)[number - 1:], f"request {number} to {path}", timeout_s)
        return found[0]

    def release(self, path: str, number: int | None = None) -> None:
        """Answer the held request ``number`` to ``path``; without ``number``, every held one and,
        as the path is held no more, every later one at once."""
        with self._lock:
            if number is None:
                self._held.discard(path)
            fetches = [f for f in self.fetches if f.path == path and number in (None, f.number)]
        for fetch in fetches:
            self._set(fetch)

    def release_all(self) -> None:
        with self._lock:
            fetches = list(self.fetches)
        for fetch in fetches:
            self._set(fetch)

    def _set(self, fetch: Fetch) -> None:
        if fetch._loop is not None and not fetch._loop.is_closed():
            fetch._loop.call_soon_threadsafe(fetch._release.set)

    def app(self) -> Starlette:
        async def serve(request: Request) -> Response:
            path = request.url.path
            with self._lock:
                fetch = Fetch(path, sum(f.path == path for f in self.fetches) + 1)
                fetch._loop = asyncio.get_running_loop()
                self.fetches.append(fetch)
                held = path in self._held
            if held and not await released(request, fetch._release):
                fetch.closed = True
                return Response(status_code=499)
            fetch.answered = True
            return PlainTextResponse(fetch.answer + "\n")

        return Starlette(routes=[Route("/{path:path}", serve)])


async def released(request: Request, release: asyncio.Event) -> bool:
    """Wait for ``release``; False if the client closed the connection first."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waits = [asyncio.ensure_future(release.wait()), asyncio.ensure_future(gone())]
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[0] in done


@contextmanager
def fetch_site() -> Iterator[FetchSite]:
    """A ``FetchSite`` served on 127.0.0.1; every held request is released before it stops."""
    site = FetchSite()
    with running_server(site.app()) as base_url:
        site.origin = base_url.removesuffix("/v1")
        try:
            yield site
        finally:
            site.release_all()
