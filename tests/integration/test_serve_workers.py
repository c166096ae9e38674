"""``agent-ng serve`` past one process: workers on one port, start-up refusals, graceful drain.

The drain cases run the real ``agent-ng serve`` and hold a streamed run open on a scripted model
that stalls mid-answer, so the run is provably in flight when SIGTERM arrives: the port refuses
new connections at once, the open stream still ends with its ``run_end``, and the process exits
0 well within ``AGENT_DRAIN_S``. The SQLite rule is checked against the real Redis, a second
machine faked by writing its claim.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from typer.testing import CliRunner

from agent_ng.service import drain as drain_module
from agent_ng.service import topology
from agent_ng.service.drain import Drain
from agent_ng.service.settings import ServiceSettings
from agent_ng.service.topology import shared_sqlite_refusal, sqlite_presence
from tests.helpers import hostile
from tests.helpers.hostile import MODEL_ENV, Server, agent_serve, openai_server, server_log
from tests.helpers.openai_server import Reply
from tests.helpers.ports import free_port
from tests.helpers.system import REDIS_URL

DRAIN_S = 20.0
"""The drain the servers get: far above what a drained stream takes, so exiting within it shows
the wait ended when the stream did."""
REFUSED_WITHIN_S = 2.0
"""New connections must be refused this soon after SIGTERM (uvicorn ticks every 0.1 s, its
multi-worker parent every 0.5 s)."""
GUARD_S = 60
WORKERS_START_S = 120
"""Two workers each import the agent at once: on a loaded 2-core machine that took over 30 s."""


# --- the SQLite checkpointer and the machines that share it --------------------------------


def sqlite_settings(db: Path, prefix: str) -> ServiceSettings:
    return ServiceSettings(checkpoint_url=f"sqlite:///{db}", redis_url=REDIS_URL, redis_prefix=prefix)


async def claims(prefix: str, db: Path) -> dict[str, float]:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return dict(await redis.zrange(f"{prefix}sqlite:{db.resolve()}", 0, -1, withscores=True))
    finally:
        await redis.aclose()


async def fake_machine(prefix: str, db: Path, host: str, *, lapses_in_s: float) -> None:
    """Claim ``db`` as a process on ``host`` would, lapsing ``lapses_in_s`` from Redis's now."""
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        seconds, microseconds = await redis.time()
        expires = seconds * 1000 + microseconds // 1000 + lapses_in_s * 1000
        await redis.zadd(f"{prefix}sqlite:{db.resolve()}", {f"4242@{host}": expires})
    finally:
        await redis.aclose()


@pytest.mark.needs("redis")
async def test_an_sqlite_file_claimed_by_another_machine_is_refused(tmp_path, redis_prefix):
    db = tmp_path / "threads.db"
    me = f"{os.getpid()}@{socket.gethostname()}"

    assert await shared_sqlite_refusal(sqlite_settings(db, redis_prefix)) is None
    assert me in await claims(redis_prefix, db)

    await fake_machine(redis_prefix, db, "other-machine", lapses_in_s=30)
    reason = await shared_sqlite_refusal(sqlite_settings(db, redis_prefix))

    assert reason is not None and "\n" not in reason
    assert str(db.resolve()) in reason and "other-machine" in reason and "postgresql://" in reason
    assert me not in await claims(redis_prefix, db), "a refused process keeps no claim"


@pytest.mark.needs("redis")
async def test_a_lapsed_claim_and_another_file_do_not_refuse(tmp_path, redis_prefix):
    db = tmp_path / "threads.db"
    await fake_machine(redis_prefix, db, "gone-machine", lapses_in_s=-1)
    await fake_machine(redis_prefix, tmp_path / "its-own.db", "other-machine", lapses_in_s=30)

    assert await shared_sqlite_refusal(sqlite_settings(db, redis_prefix)) is None
    assert not any("gone-machine" in member for member in await claims(redis_prefix, db))


@pytest.mark.needs("redis")
async def test_a_running_service_renews_its_claim_and_leaves_it_on_the_way_out(
    tmp_path, redis_prefix, monkeypatch
):
    monkeypatch.setattr(topology, "PRESENCE_RENEW_S", 0.05)
    db, settings = tmp_path / "threads.db", sqlite_settings(tmp_path / "threads.db", redis_prefix)

    async with sqlite_presence(settings):
        (me, first), = (await claims(redis_prefix, db)).items()
        async with asyncio.timeout(10):
            while (await claims(redis_prefix, db))[me] <= first:
                await asyncio.sleep(0.02)

    assert me not in await claims(redis_prefix, db)


@pytest.mark.needs("redis")
async def test_the_lifespans_presence_refuses_to_start_beside_another_machine(tmp_path, redis_prefix):
    db = tmp_path / "threads.db"
    await fake_machine(redis_prefix, db, "other-machine", lapses_in_s=30)

    with pytest.raises(RuntimeError, match="other-machine"):
        async with sqlite_presence(sqlite_settings(db, redis_prefix)):
            pytest.fail("entered beside another machine")


@pytest.mark.needs("redis")
def test_agent_ng_serve_refuses_an_sqlite_file_another_machine_uses(tmp_path, redis_prefix, monkeypatch):
    from agent_ng.cli.main import app

    db = tmp_path / "threads.db"
    asyncio.run(fake_machine(redis_prefix, db, "other-machine", lapses_in_s=30))
    monkeypatch.setattr("agent_ng.cli.main.tune_collector", lambda: None)
    env = {"AGENT_CHECKPOINT_URL": f"sqlite:///{db}", "AGENT_REDIS_URL": REDIS_URL, "AGENT_REDIS_PREFIX": redis_prefix}

    result = CliRunner().invoke(app, ["serve", "--port", "0"], env=env)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"agent-ng: the SQLite checkpointer {db.resolve()} is used by replicas on other")
    assert result.stderr.count("\n") == 1


# --- the drain: readiness, the signal chain -------------------------------------------------


async def test_sigterm_marks_the_app_draining_then_reaches_the_handler_before_it():
    """In this process, with a real signal: the handler chained in front of the test's (as in
    front of uvicorn's) marks the drain, /readyz turns 503, and the earlier handler still runs."""
    app = FastAPI()
    app.include_router(drain_module.router)
    app.state.drain = drain = Drain()
    reached: list[int] = []

    def uvicorns(sig: int, frame: object) -> None:
        reached.append(sig)

    before = signal.signal(signal.SIGTERM, uvicorns)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
            drain.install()
            ready = await client.get("/readyz")
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(drain.started.wait(), 5)
            draining = await client.get("/readyz")
            drain.uninstall()
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)

    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert (draining.status_code, draining.json()) == (503, {"status": "draining"})
    assert drain.draining and reached == [signal.SIGTERM]
    assert restored is uvicorns


def test_install_off_the_main_thread_changes_nothing():
    drain, handlers = Drain(), []

    def install() -> None:
        handlers.append(signal.getsignal(signal.SIGTERM))
        drain.install()
        handlers.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(GUARD_S)

    assert handlers[0] is handlers[1] and not drain.draining


# --- real processes -------------------------------------------------------------------------


@contextmanager
def stalled_model() -> Iterator[tuple[str, threading.Event]]:
    """A model whose answer stops after two chunks until the event is set."""
    release = threading.Event()
    with openai_server([Reply(text="draining finishes this answer", hold_after=2, release=release)]) as url:
        yield url, release


def refused_soon(server: Server) -> float:
    """Seconds until a new connection to the server is refused; a failure if that takes longer
    (or a request hangs), or if readiness, once 503, answers 200 again. A connection the kernel
    took into the listening socket's backlog just as the socket closed is reset unanswered:
    refused too."""
    started, statuses = time.monotonic(), []
    while time.monotonic() - started < REFUSED_WITHIN_S:
        try:
            statuses.append(httpx.get(f"{server.url}/readyz", timeout=REFUSED_WITHIN_S).status_code)
        except (httpx.ConnectError, httpx.ReadError):
            after_503 = statuses[statuses.index(503) :] if 503 in statuses else []
            assert 200 not in after_503, f"readiness answered 200 again after 503: {statuses}"
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"a new connection was not refused within {REFUSED_WITHIN_S} s of SIGTERM: {statuses}")


def drain_with_a_stream_open(server: Server, release: threading.Event) -> dict:
    """Start a streamed run, SIGTERM the server mid-answer; what happened, in figures."""
    assert httpx.get(f"{server.url}/readyz", timeout=5).json() == {"status": "ready"}
    with httpx.Client(base_url=server.url, timeout=GUARD_S) as client:
        with client.stream("POST", "/threads/drain/runs/stream", json={"input": "hello"}) as response:
            lines = response.iter_lines()
            names = []
            for line in lines:
                if line.startswith("event:"):
                    names.append(line[6:].strip())
                if names[-1:] == ["content"]:
                    break
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            refused_after_s = refused_soon(server)
            alive_while_streaming = server.process.poll() is None
            release.set()
            data = []
            for line in lines:
                if line.startswith("event:"):
                    names.append(line[6:].strip())
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
    code = server.process.wait(DRAIN_S + 10)
    return {
        "names": names,
        "last": json.loads(data[-1]) if data else None,
        "refused_after_s": refused_after_s,
        "alive_while_streaming": alive_while_streaming,
        "code": code,
        "exited_after_s": time.monotonic() - signalled,
    }


def test_sigterm_refuses_new_connections_and_lets_the_open_stream_finish(tmp_path):
    with stalled_model() as (model_url, release), agent_serve(
        tmp_path, model_url=model_url, env={"AGENT_DRAIN_S": str(DRAIN_S)}
    ) as server:
        seen = drain_with_a_stream_open(server, release)

    assert seen["refused_after_s"] < REFUSED_WITHIN_S
    assert seen["alive_while_streaming"]
    assert seen["names"][0] == "run_start" and seen["names"][-1] == "run_end", seen["names"]
    assert seen["last"]["status"] == "done", seen["last"]
    assert seen["code"] == 0, server_log(server)
    assert seen["exited_after_s"] < DRAIN_S


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` that are uvicorn workers (multiprocessing's spawn)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return sorted(found)


@pytest.mark.needs("redis")
def test_workers_that_cannot_start_stop_the_parent_with_a_failure_status(tmp_path, redis_prefix):
    """uvicorn's own parent exits 0 when its workers fail their start-up; ours says 3."""
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV} | {
        "AGENT_CHECKPOINT_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        "AGENT_CHECKPOINT_TIMEOUT_S": "1",
        "AGENT_CACHE_URL": "memory://",
        "AGENT_REDIS_URL": REDIS_URL,
        "AGENT_REDIS_PREFIX": redis_prefix,
    }
    command = [str(Path(sys.executable).parent / "agent-ng"), "serve", "--workers", "2", "--port", str(free_port())]

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WORKERS_START_S)

    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stderr.count("Application startup failed") >= 1


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.needs("redis")
def test_two_workers_serve_one_port_and_sigterm_to_the_parent_drains_both(tmp_path, redis_prefix, monkeypatch):
    monkeypatch.setattr(hostile, "STARTUP_GUARD_S", WORKERS_START_S)
    env = {
        "AGENT_REDIS_URL": REDIS_URL,
        "AGENT_REDIS_PREFIX": redis_prefix,
        "AGENT_WORKERS": "2",
        "AGENT_DRAIN_S": str(DRAIN_S),
    }
    with stalled_model() as (model_url, release), agent_serve(tmp_path, model_url=model_url, env=env) as server:
        deadline = time.monotonic() + WORKERS_START_S
        while server_log(server).count("Application startup complete.") < 2:
            assert time.monotonic() < deadline, server_log(server)
            time.sleep(0.1)
        workers = children(server.process.pid)
        started = {int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", server_log(server))}
        seen = drain_with_a_stream_open(server, release)
        left = [pid for pid in workers if alive(pid)]

    assert len(workers) == 2 and set(workers) == started, (workers, started)
    assert seen["refused_after_s"] < REFUSED_WITHIN_S
    assert seen["names"][0] == "run_start" and seen["names"][-1] == "run_end", seen["names"]
    assert seen["last"]["status"] == "done", seen["last"]
    assert seen["code"] == 0 and seen["exited_after_s"] < DRAIN_S
    assert left == []
