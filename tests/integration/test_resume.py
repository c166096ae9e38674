"""Resumable streams over real HTTP: event ids, reconnects, background runs, joins, cancel.

Every run is scripted and its tools wait on ``threading.Event``s the test sets, so which
events happen while a client is away is decided by the test. The event log is tested in the
process and in the real Redis (127.0.0.1:6379) under a key prefix of its own, removed after.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from weakref import WeakKeyDictionary

import httpx
import pytest
from langchain_core.tools import tool
from redis import Redis

from agent_ng.graph.settle import CANCELLED
from agent_ng.service.app import create_app
from agent_ng.service.event_log import MemoryEventLog, RedisEventLog
from tests.helpers.graph_runs import until_cancelled
from tests.helpers.live_server import serving
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.sse import Frame, events
from tests.helpers.system import REDIS_URL
from tests.integration.test_service import GUARD_S, client, settings

VOLATILE = {"t", "run_id", "tool_call_id", "elapsed_s", "eta_s"}
"""Fields that differ between two runs of the same script."""


@pytest.fixture(params=["memory", "redis"])
def log_settings(request) -> dict:
    if request.param == "memory":
        return {}
    return {"redis_url": REDIS_URL, "redis_prefix": request.getfixturevalue("redis_prefix")}


class Gates:
    """Two tools in a row, each entering and then waiting until the test opens its gate."""

    def __init__(self, opened: bool = False) -> None:
        self.entered = {name: threading.Event() for name in ("first", "second")}
        self.gate = {name: threading.Event() for name in ("first", "second")}
        if opened:
            for gate in self.gate.values():
                gate.set()

        def hold(name: str):
            def wait() -> str:
                self.entered[name].set()
                assert self.gate[name].wait(GUARD_S)
                return f"{name} released"

            return tool(name, description=f"Waits for the {name} gate.")(wait)

        self.tools = [hold("first"), hold("second")]

    def open(self, name: str) -> None:
        self.gate[name].set()


def script() -> ScriptedModel:
    return ScriptedModel(
        replies=[calls(("first", {})), calls(("second", {})), Reply(text="both gates opened")]
    )


def comparable(frames: list[Frame]) -> list[dict]:
    return [{k: v for k, v in f.data.items() if k not in VOLATILE} for f in frames]


def seq(frame: Frame) -> tuple[int, ...]:
    run_id, _, cursor = frame.id.partition(":")
    assert run_id == frame.data["run_id"]
    return tuple(int(part) for part in cursor.split("-"))


class Reader:
    """One response's events, read in parts."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events = events(response)

    async def __call__(self, until: str | None = None) -> list[Frame]:
        """Frames up to and including the next ``until`` event (to the end when ``None``)."""
        assert self.response.status_code == 200, await self.response.aread()
        got = []
        async for frame in self.events:
            got.append(frame)
            if frame.event == until:
                break
        return got


READERS: WeakKeyDictionary[httpx.Response, Reader] = WeakKeyDictionary()


def read(response: httpx.Response) -> Reader:
    """The reader of ``response``, the same one each time, so a read goes on where one stopped."""
    if response not in READERS:
        READERS[response] = Reader(response)
    return READERS[response]


async def entered(gates: Gates, name: str) -> None:
    assert await asyncio.to_thread(gates.entered[name].wait, GUARD_S)


async def uninterrupted() -> list[Frame]:
    gates = Gates(opened=True)
    with serving(create_app(settings(), model=script(), tools=gates.tools)) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            async with c.stream("POST", "/threads/t1/runs/stream", json={"input": "go"}) as r:
                return await read(r)()


async def test_a_reconnect_with_last_event_id_gets_exactly_the_missed_events_then_the_live_ones(
    log_settings,
):
    gates = Gates()
    body = {"input": "go", "on_disconnect": "continue"}
    with serving(create_app(settings(**log_settings), model=script(), tools=gates.tools)) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            async with c.stream("POST", "/threads/t1/runs/stream", json=body) as r:
                before = await read(r)(until="tool_start")  # leaving closes the connection
            gates.open("first")
            await entered(gates, "second")  # the run went on without a client
            headers = {"Last-Event-ID": before[-1].id}
            async with c.stream("POST", "/threads/t1/runs/stream", json=body, headers=headers) as r:
                missed = await read(r)(until="tool_start")
                gates.open("second")
                after = missed + await read(r)()
            run_id = before[0].data["run_id"]
            async with c.stream("GET", f"/threads/t1/runs/{run_id}/stream") as r:
                whole = await read(r)()

    got = before + after
    assert [f.id for f in got] == [f.id for f in whole], "none lost, none repeated"
    assert [f.data for f in got] == [f.data for f in whole]
    assert [seq(f) for f in got] == sorted({seq(f) for f in got}), "ids increase within the run"
    assert missed[0].data["type"] == "tool_result" and missed[0].data["name"] == "first"
    assert comparable(got) == comparable(await uninterrupted())
    assert got[-1].data["status"] == "done"


async def test_a_background_run_is_joined_later_from_its_start_and_replayed_after_its_end():
    gates = Gates()
    with serving(create_app(settings(), model=script(), tools=gates.tools)) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            started = await c.post("/threads/t1/runs", json={"input": "go"})
            run_id = started.json()["run_id"]
            await entered(gates, "first")  # running, with no client at all
            while_running = (await c.get(f"/threads/t1/runs/{run_id}")).json()
            async with c.stream("GET", f"/threads/t1/runs/{run_id}/stream") as r:
                live = await read(r)(until="tool_start")
                gates.open("first")
                live += await read(r)(until="tool_start")
                gates.open("second")
                live += await read(r)()
            async with c.stream("GET", f"/threads/t1/runs/{run_id}/stream") as r:
                replay = await read(r)()
            after_third = live[2].id
            async with c.stream(
                "GET", f"/threads/t1/runs/{run_id}/stream", headers={"Last-Event-ID": after_third}
            ) as r:
                tail = await read(r)()
            thread = (await c.get("/threads/t1")).json()
            ended = (await c.get(f"/threads/t1/runs/{run_id}")).json()
            unknown = await c.get("/threads/t1/runs/00000000-0000-4000-8000-000000000000")

    assert (while_running["status"], ended["status"]) == ("running", "done")
    assert while_running["attempt"] == ended["attempt"] == 1
    assert unknown.status_code == 404
    assert started.status_code == 202 and started.json()["thread_id"] == "t1"
    assert live[0].data["type"] == "run_start" and live[0].data["run_id"] == run_id
    assert live[-1].data["type"] == "run_end" and live[-1].data["status"] == "done"
    assert [f.id for f in replay] == [f.id for f in live]
    assert [f.id for f in tail] == [f.id for f in live[3:]]
    assert thread["messages"][-1]["content"] == "both gates opened"


async def test_continue_leaves_the_run_going_after_the_client_goes_away():
    gates = Gates()
    body = {"input": "go", "on_disconnect": "continue"}
    with serving(create_app(settings(), model=script(), tools=gates.tools)) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            async with c.stream("POST", "/threads/t1/runs/stream", json=body) as r:
                before = await read(r)(until="tool_start")
            gates.open("first")
            gates.open("second")
            run_id = before[0].data["run_id"]
            async with c.stream("GET", f"/threads/t1/runs/{run_id}/stream") as r:
                whole = await read(r)()
            thread = (await c.get("/threads/t1")).json()

    assert whole[-1].data["status"] == "done"
    assert [m["content"] for m in thread["messages"] if m["role"] == "tool"] == [
        "first released",
        "second released",
    ]


async def test_the_cancel_route_stops_a_run_which_settles_and_ends_cancelled():
    cancelled = []

    forever = until_cancelled(cancelled)

    model = ScriptedModel(replies=[calls(("forever", {})), Reply(text="after the cancel")])
    with serving(create_app(settings(), model=model, tools=[forever])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            run_id = (await c.post("/threads/t1/runs", json={"input": "go"})).json()["run_id"]
            async with c.stream("GET", f"/threads/t1/runs/{run_id}/stream") as r:
                got = await read(r)(until="tool_start")
                stopped = await c.post(f"/threads/t1/runs/{run_id}/cancel")
                got += await read(r)()
            again = await c.post(f"/threads/t1/runs/{run_id}/cancel")
            unknown = await c.post(f"/threads/t1/runs/{uuid.uuid4()}/cancel")
            elsewhere = await c.post(f"/threads/t2/runs/{run_id}/cancel")
            thread = (await c.get("/threads/t1")).json()
            async with c.stream("POST", "/threads/t1/runs/stream", json={"input": "next"}) as r:
                next_run = await read(r)()

    assert stopped.status_code == 200 and stopped.json() == {"run_id": run_id, "status": "cancelled"}
    assert cancelled == ["forever"]
    assert got[-1].data["type"] == "run_end" and got[-1].data["status"] == "cancelled"
    assert [f.data["type"] for f in got].count("run_end") == 1
    assert again.status_code == 409 and "ended" in again.json()["detail"]
    assert unknown.status_code == 404 and elsewhere.status_code == 404
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant", "tool"]
    assert thread["messages"][-1]["content"] == CANCELLED and thread["next"] == []
    assert next_run[-1].data["status"] == "done"


async def test_a_second_replica_serves_the_reconnect_through_redis(redis_prefix):
    gates = Gates()
    shared = settings(redis_url=REDIS_URL, redis_prefix=redis_prefix)
    body = {"input": "go", "on_disconnect": "continue"}
    first_app = create_app(shared, model=script(), tools=gates.tools)
    second_app = create_app(shared, model=ScriptedModel(replies=[]), tools=[])
    with serving(first_app) as first_url, serving(second_app) as second_url:
        async with client(first_url) as one, client(second_url) as two, asyncio.timeout(GUARD_S):
            async with one.stream("POST", "/threads/t1/runs/stream", json=body) as r:
                before = await read(r)(until="tool_start")
            gates.open("first")
            await entered(gates, "second")
            headers = {"Last-Event-ID": before[-1].id}
            async with two.stream("POST", "/threads/t1/runs/stream", json=body, headers=headers) as r:
                after = await read(r)(until="tool_start")
                gates.open("second")
                after += await read(r)()
            run_id = before[0].data["run_id"]
            async with one.stream("GET", f"/threads/t1/runs/{run_id}/stream") as r:
                whole = await read(r)()

    assert [f.id for f in before + after] == [f.id for f in whole]
    assert [f.data for f in before + after] == [f.data for f in whole]
    assert whole[-1].data["status"] == "done"


async def test_bad_resume_requests_get_a_clear_error_and_start_nothing(log_settings):
    model = ScriptedModel(replies=[])
    with serving(create_app(settings(**log_settings), model=model, tools=[])) as url:
        async with client(url) as c:
            garbled = await c.post(
                "/threads/t1/runs/stream", json={"input": "hi"}, headers={"Last-Event-ID": "nope"}
            )
            expired = await c.post(
                "/threads/t1/runs/stream",
                json={"input": "hi"},
                headers={"Last-Event-ID": f"{uuid.uuid4()}:3"},
            )
            missing = await c.get(f"/threads/t1/runs/{uuid.uuid4()}/stream")
            policy = await c.post("/threads/t1/runs", json={"input": "hi", "on_disconnect": "x"})
            threads = (await c.get("/threads")).json()

    assert garbled.status_code == 422 and "event id" in garbled.json()["detail"][0]["msg"]
    assert expired.status_code == 404 and "unknown or expired" in expired.json()["detail"]
    assert missing.status_code == 404
    assert policy.status_code == 422
    assert policy.json()["detail"][0]["loc"] == ["body", "on_disconnect"]
    assert threads == [] and model.seen == []


def start(run_id: str) -> dict:
    return {"type": "run_start", "run_id": run_id}


def end(run_id: str) -> dict:
    return {"type": "run_end", "run_id": run_id, "status": "done"}


async def test_the_memory_log_keeps_at_most_max_events_and_drops_a_run_after_its_retention():
    log = MemoryEventLog(max_events=3, retention_s=0)
    await log.open("r1", "t1")
    for n in range(5):
        await log.append("r1", {"type": "content", "n": n})
    await log.append("r1", end("r1"))
    kept = [(cursor, data.get("n")) async for cursor, data in log.read("r1")]
    await log.open("r2", "t1")  # a later run: r1 ended more than 0 s ago

    assert kept == [("4", 3), ("5", 4), ("6", None)], "the newest 3, cursors unchanged"
    assert await log.thread_of("r1") is None and await log.thread_of("r2") == "t1"


async def test_the_redis_log_trims_its_stream_and_expires_its_keys(redis_prefix):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix, max_events=10, retention_s=60)
    await log.open("r1", "t1")
    await log.append("r1", start("r1"))
    for n in range(500):
        await log.append("r1", {"type": "content", "n": n})
    await log.append("r1", end("r1"))
    kept = [data async for _, data in log.read("r1")]
    redis = Redis.from_url(REDIS_URL)
    ttls = [redis.ttl(key) for key in redis.scan_iter(match=f"{redis_prefix}*")]
    redis.close()
    await log.close()

    assert kept[-1]["type"] == "run_end" and len(kept) < 500, "trimmed (MAXLEN ~)"
    assert [d["n"] for d in kept[:-1]] == list(range(500 - len(kept) + 1, 500))
    assert len(ttls) == 2 and all(0 < ttl <= 60 for ttl in ttls)


async def test_the_run_routes_need_the_api_key_when_one_is_set():
    model = ScriptedModel(replies=[])
    with serving(create_app(settings(api_key="s3cret"), model=model, tools=[])) as url:
        async with client(url) as c:
            run_id = uuid.uuid4()
            refused = [
                (await c.request(method, path, json={"input": "hi"})).status_code
                for method, path in [
                    ("POST", "/threads/t1/runs"),
                    ("GET", f"/threads/t1/runs/{run_id}/stream"),
                    ("POST", f"/threads/t1/runs/{run_id}/cancel"),
                ]
            ]
    assert refused == [401, 401, 401] and model.seen == []


async def test_a_run_whose_event_log_fails_is_stopped_and_settled_and_the_service_goes_on(
    caplog,
):
    class BrokenLog(MemoryEventLog):
        async def append(self, run_id: str, data: dict, token: str | None = None) -> str:
            if data["type"] == "tool_start":
                raise ConnectionError("log store gone")
            return await super().append(run_id, data, token)

    @tool
    async def forever() -> str:
        """Runs until cancelled."""
        await asyncio.Event().wait()

    model = ScriptedModel(replies=[calls(("forever", {})), Reply(text="next answer")])
    app = create_app(settings(), model=model, tools=[forever])
    with serving(app) as url:
        app.state.runs.events = BrokenLog()
        async with client(url) as c, asyncio.timeout(GUARD_S):
            run_id = (await c.post("/threads/t1/runs", json={"input": "go"})).json()["run_id"]
            while app.state.runs.running(run_id):  # bounded by the timeout
                await asyncio.sleep(0.01)
            thread = (await c.get("/threads/t1")).json()
            app.state.runs.events = MemoryEventLog()
            async with c.stream("POST", "/threads/t1/runs/stream", json={"input": "next"}) as r:
                next_run = await read(r)()

    assert [m["role"] for m in thread["messages"]] == ["user", "assistant", "tool"]
    assert thread["messages"][-1]["content"] == CANCELLED and thread["next"] == []
    assert next_run[-1].data["status"] == "done"
    assert "its event log failed" in caplog.text and "log store gone" in caplog.text


async def test_a_cancel_sent_to_another_replica_reaches_the_run_through_redis(redis_prefix):
    @tool
    async def forever() -> str:
        """Runs until cancelled."""
        await asyncio.Event().wait()

    shared = settings(redis_url=REDIS_URL, redis_prefix=redis_prefix)
    owner = create_app(shared, model=ScriptedModel(replies=[calls(("forever", {}))]), tools=[forever])
    other = create_app(shared, model=ScriptedModel(replies=[]), tools=[])
    with serving(owner) as owner_url, serving(other) as other_url:
        async with client(owner_url) as one, client(other_url) as two, asyncio.timeout(GUARD_S):
            run_id = (await one.post("/threads/t1/runs", json={"input": "go"})).json()["run_id"]
            async with two.stream("GET", f"/threads/t1/runs/{run_id}/stream") as r:
                got = await read(r)(until="tool_start")
                asked = await two.post(f"/threads/t1/runs/{run_id}/cancel")
                got += await read(r)()
            again = await two.post(f"/threads/t1/runs/{run_id}/cancel")
            thread = (await one.get("/threads/t1")).json()

    assert asked.status_code == 202 and asked.json()["status"] == "cancelling"
    assert got[-1].data["type"] == "run_end" and got[-1].data["status"] == "cancelled"
    assert again.status_code == 409 and "has ended" in again.json()["detail"]
    assert thread["messages"][-1]["content"] == CANCELLED and thread["next"] == []
