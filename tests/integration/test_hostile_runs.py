"""Hostile cases for the runs, their event log and the stores the service depends on.

Each case drives the real ``agent-ng serve`` (``tests/helpers/hostile.py``) and asserts both the
answer and that ``/healthz`` kept answering within 100 ms. Redis and PostgreSQL fail without the
machine's own being touched: a Redis server of the test's own is stopped and started again, and
PostgreSQL is reached through a TCP proxy the test can blackhole (it keeps accepting and reading
and answers nothing, as a dropped network does).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlparse

import httpx
import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.helpers.hostile import HealthWatch, Server, agent_serve, openai_server
from tests.helpers.openai_server import Reply
from tests.helpers.ports import free_port
from tests.helpers.sse import Frame, events
from tests.helpers.system import POSTGRES_URL, REDIS_URL, need

GUARD_S = 60
AT_ONCE_S = 2.0
"""A stream with nothing left to send ends within this."""
CHECKPOINT_TIMEOUT_S = 2
FAIL_FAST_S = 3 * CHECKPOINT_TIMEOUT_S
"""A request that needs an unreachable database is answered within this (the bound, retry
included, plus slack for a loaded machine)."""


def client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=GUARD_S)


async def frames(c: httpx.AsyncClient, method: str, path: str, **kwargs) -> list[Frame]:
    async with c.stream(method, path, **kwargs) as r:
        assert r.status_code == 200, await r.aread()
        return [f async for f in events(r)]


async def until(stream: AsyncIterator[Frame], kind: str) -> list[Frame]:
    got = []
    async for frame in stream:
        got.append(frame)
        if frame.event == kind:
            return got
    raise AssertionError(f"the stream ended before a {kind} event: {[f.event for f in got]}")


def assert_one_error_end(got: list[Frame], *names: str) -> dict:
    """The stream ended with its one ``run_end``, status error, one line naming ``names``."""
    types = [f.event for f in got]
    assert types[-1] == "run_end" and types.count("run_end") == 1, types
    end = got[-1].data
    assert end["status"] == "error" and "\n" not in end["error"], end
    assert all(name in end["error"] for name in names), end["error"]
    return end


@pytest.fixture(params=["memory", "redis"])
def log_env(request) -> Iterator[dict[str, str]]:
    """The service's settings for its event log: in the process, or in the shared Redis."""
    if request.param == "memory":
        yield {}
        return
    need("redis")
    prefix = f"agent-ng-test:{uuid.uuid4().hex}:"
    yield {"AGENT_REDIS_URL": REDIS_URL, "AGENT_REDIS_PREFIX": prefix}
    redis = Redis.from_url(REDIS_URL)
    if keys := list(redis.scan_iter(match=f"{prefix}*")):
        redis.delete(*keys)
    redis.close()


async def test_a_join_after_the_runs_last_event_ends_at_once(tmp_path, log_env):
    with (
        openai_server([Reply(text="all done")]) as model_url,
        agent_serve(tmp_path, model_url=model_url, env=log_env) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as c:
            whole = await frames(c, "POST", "/threads/t1/runs/stream", json={"input": "hi"})
            run_id, last = whole[0].data["run_id"], {"Last-Event-ID": whole[-1].id}
            async with asyncio.timeout(AT_ONCE_S):
                joined = await frames(c, "GET", f"/threads/t1/runs/{run_id}/stream", headers=last)
                body = {"input": "hi"}
                resumed = await frames(c, "POST", "/threads/t1/runs/stream", json=body, headers=last)

    assert whole[-1].event == "run_end" and whole[-1].data["status"] == "done"
    assert joined == [] and resumed == [], "nothing follows run_end"
    health.assert_responsive()


@contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen]:
    """A Redis of this test's own on ``port``, nothing saved; killed on exit if still up."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + GUARD_S
    try:
        while True:
            try:
                redis.ping()
                break
            except RedisConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield process
    finally:
        redis.close()
        process.kill()
        process.wait()


@pytest.mark.needs("redis-server")
async def test_redis_going_away_mid_stream_ends_it_with_run_end_and_the_service_recovers(tmp_path):
    port, release = free_port(), threading.Event()
    replies = [
        Reply(text="one two three four", hold_after=2, release=release),
        Reply(text="after redis came back"),
    ]
    env = {"AGENT_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    with (
        openai_server(replies) as model_url,
        redis_server(port) as redis,
        agent_serve(tmp_path, model_url=model_url, env=env) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as c, asyncio.timeout(GUARD_S):
            async with c.stream("POST", "/threads/t1/runs/stream", json={"input": "count"}) as r:
                stream = events(r)
                got = await until(stream, "content")
                redis.kill()
                redis.wait()
                async with asyncio.timeout(AT_ONCE_S):
                    got += [f async for f in stream]
            down = await c.post("/threads/t2/runs", json={"input": "while Redis is away"})
            with redis_server(port):
                release.set()
                after = await frames(c, "POST", "/threads/t1/runs/stream", json={"input": "again"})
                thread = (await c.get("/threads/t1")).json()

    assert_one_error_end(got, "Redis", f":{port}")
    assert down.status_code == 503 and f"Redis at 127.0.0.1:{port}" in down.json()["detail"]
    assert after[-1].data["status"] == "done", after[-1].data["error"]
    roles = [(m["role"], m["content"]) for m in thread["messages"]]
    assert roles[0] == ("user", "count") and roles[-1] == ("assistant", "after redis came back")
    assert roles[1][0] == "assistant" and roles[2] == ("user", "again"), "the cut run was settled"
    assert thread["next"] == []
    health.assert_responsive()


class Blackhole:
    """A TCP proxy to ``target`` that can go dark: it then accepts and reads, and sends nothing.

    It runs its own event loop in a thread, since the harness blocks the test's loop while the
    server starts. ``restore`` cuts the connections that went through the dark (bytes were lost
    on them, as a reset would after a real partition) and forwards again.
    """

    def __init__(self, target: str) -> None:
        address = urlparse(target)
        self.target = (address.hostname or "127.0.0.1", address.port or 5432)
        self.dark = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()

    def __enter__(self) -> Blackhole:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(GUARD_S)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._close)
        self._thread.join(GUARD_S)

    def url(self, url: str) -> str:
        """``url`` (a PostgreSQL URL) through this proxy."""
        address = urlparse(url)
        return address._replace(netloc=f"{address.username}@127.0.0.1:{self.port}").geturl()

    def go_dark(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "dark", True)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self._restore)

    def _restore(self) -> None:
        self.dark = False
        self._cut()

    def _close(self) -> None:
        self._server.close()
        self._cut()
        self._loop.stop()

    def _cut(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.dark:
                while await reader.read(65536):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.dark:
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def timed() -> AsyncIterator[list[float]]:
    took: list[float] = []
    started = time.perf_counter()
    try:
        yield took
    finally:
        took.append(time.perf_counter() - started)


@pytest.mark.needs("postgres")
async def test_an_unreachable_checkpoint_database_fails_fast_with_a_clear_error_and_recovers(tmp_path):
    release = threading.Event()
    streamed, background, later = (f"pg-{name}-{uuid.uuid4().hex[:8]}" for name in "sbl")
    replies = [
        Reply(text="cut by the outage", hold_after=1, release=release),
        Reply(text="cut by the outage too", hold_after=1, release=release),
        Reply(text="after the outage"),
    ]
    with Blackhole(POSTGRES_URL) as proxy:
        env = {
            "AGENT_CHECKPOINT_URL": proxy.url(POSTGRES_URL),
            "AGENT_CHECKPOINT_TIMEOUT_S": str(CHECKPOINT_TIMEOUT_S),
        }
        with (
            openai_server(replies) as model_url,
            agent_serve(tmp_path, model_url=model_url, env=env) as server,
            HealthWatch(server.url) as health,
        ):
            async with client(server) as c, asyncio.timeout(GUARD_S * 3):
                async with c.stream("POST", f"/threads/{streamed}/runs/stream", json={"input": "a"}) as r:
                    stream = events(r)
                    got = await until(stream, "content")
                    joined = await c.post(f"/threads/{background}/runs", json={"input": "b"})
                    path = f"/threads/{background}/runs/{joined.json()['run_id']}/stream"
                    async with c.stream("GET", path) as j:
                        joined_stream = events(j)
                        joined_got = await until(joined_stream, "content")
                        proxy.go_dark()
                        release.set()
                        async with timed() as streamed_s:
                            got += [f async for f in stream]
                        joined_got += [f async for f in joined_stream]
                async with timed() as refused_s:
                    refused = await c.post(f"/threads/{later}/runs", json={"input": "c"})
                proxy.restore()
                after = await frames(c, "POST", f"/threads/{later}/runs/stream", json={"input": "c"})

    print(f"blackholed: a run's end took {streamed_s[0]:.1f} s, a request {refused_s[0]:.1f} s")
    database = ["checkpoint database", f":{proxy.port}"]
    assert_one_error_end(got, *database)
    assert_one_error_end(joined_got, *database)
    assert streamed_s[0] < FAIL_FAST_S, streamed_s
    assert refused.status_code == 503 and refused_s[0] < FAIL_FAST_S, (refused, refused_s)
    assert all(name in refused.json()["detail"] for name in database), refused.json()
    assert after[-1].data["status"] == "done", after[-1].data["error"]
    health.assert_responsive()


async def test_text_no_encoding_can_carry_still_ends_the_stream_with_run_end(tmp_path, log_env):
    lone = "half an emoji: \ud83d, then more"
    with (
        openai_server([Reply(text=lone), Reply(text="next answer")]) as model_url,
        agent_serve(tmp_path, model_url=model_url, env=log_env) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as c, asyncio.timeout(GUARD_S):
            got = await frames(c, "POST", "/threads/t1/runs/stream", json={"input": "hi"})
            run_id = got[0].data["run_id"]
            replayed = await frames(c, "GET", f"/threads/t1/runs/{run_id}/stream")
            after = await frames(c, "POST", "/threads/t1/runs/stream", json={"input": "again"})

    assert got[-1].event == "run_end", [f.event for f in got]
    shown = "".join(f.data["text"] for f in got if f.event == "content")
    assert shown == lone.replace("\ud83d", "\ufffd")
    assert [f.data for f in replayed] == [f.data for f in got]
    assert after[-1].data["status"] == "done", after[-1].data
    health.assert_responsive()


async def test_text_no_encoding_can_carry_still_ends_the_agui_stream(tmp_path):
    lone = "half an emoji: \ud83d, then more"
    question = {
        "threadId": "t1",
        "runId": "run-1",
        "state": {},
        "messages": [{"id": "m1", "role": "user", "content": "hi"}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }
    with (
        openai_server([Reply(text=lone)]) as model_url,
        agent_serve(tmp_path, model_url=model_url) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as c, asyncio.timeout(GUARD_S):
            got = [f.data for f in await frames(c, "POST", "/agui", json=question)]

    types = [event["type"] for event in got]
    assert types[-1] == "RUN_FINISHED", types
    shown = "".join(e["delta"] for e in got if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert shown == lone.replace("\ud83d", "\ufffd")
    health.assert_responsive()
