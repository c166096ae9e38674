"""Replicas behind HAProxy (``deploy/haproxy.cfg``) on PostgreSQL and Redis: what a client of the
balancer sees when its stream drops, a replica dies, freezes or leaves, or a cancel lands on
another replica than the run's.

Each case starts its own ``agent-ng serve`` processes and HAProxy (``tests/helpers/replicas.py``)
on PostgreSQL (a run queue of its own) and Redis (a key prefix of its own). Its run asks the
scripted model a question answered with three ``http_fetch`` calls at once: ``/a`` and ``/b`` answer at once, ``/hang`` is
held by the site until the case releases it, so the run sits mid-tools (two results recorded, one
call open) for as long as the case needs. The site counts every request, so "ran again" and "did
not run again" are counts, not guesses.

Which replica answered a request is HAProxy's ``X-Agent-Server`` header; which replica runs a run
is its record in the run table (``Cluster.holder``). A case that needs the next request to land
elsewhere takes the first replica out of rotation with HAProxy's runtime API (``drain``), which
leaves the replica and its runs untouched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_ng.persistence.checkpoint import open_checkpointer
from tests.helpers.openai_server import OpenAIServer, Reply
from tests.helpers.replicas import (
    Cluster,
    FetchSite,
    Replica,
    eventually,
    fetch_site,
    model_server,
    replicas,
    run_row,
)
from tests.helpers.sse import Frame, events
from tests.helpers.system import POSTGRES_URL

pytestmark = pytest.mark.needs("postgres", "redis", "haproxy")

GUARD_S = 60
QUESTION = "fetch the three pages"
ANSWER = "all three pages fetched"
PATHS = ("/a", "/b", "/hang")
OUT_OF_ROTATION_S = 3.0
"""How soon HAProxy stops sending to a draining replica: two failed checks 500 ms apart
(``fall 2``, ``inter 500ms``), with slack for a loaded machine."""


@pytest.fixture
def site() -> Iterator[FetchSite]:
    with fetch_site() as site:
        site.hold("/hang")
        yield site


@pytest.fixture
def model(site: FetchSite) -> Iterator[OpenAIServer]:
    calls = [("http_fetch", {"url": site.url(path)}) for path in PATHS]
    with model_server({QUESTION: [Reply(tool_calls=calls), Reply(text=ANSWER)]}) as model:
        yield model


@pytest.fixture
def cluster(request, tmp_path, model, redis_prefix) -> Iterator[Cluster]:
    """Two replicas (``indirect`` parametrize: ``(count, env)``) behind HAProxy."""
    count, env = getattr(request, "param", (2, {}))
    with replicas(tmp_path, count, model_url=model.base_url, redis_prefix=redis_prefix, env=env) as cluster:
        yield cluster
        print(cluster.logs())  # shown when the case failed


@pytest.fixture
def threads(cluster: Cluster) -> Iterator[list[str]]:
    """The case's thread ids, the first one made here, deleted through the balancer after it."""
    made = [f"lb-{uuid.uuid4().hex[:12]}"]
    yield made
    for thread in made:
        httpx.delete(f"{cluster.url}/threads/{thread}", timeout=GUARD_S)


@pytest.fixture
def thread(threads: list[str]) -> str:
    return threads[0]


def client(cluster: Cluster) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=cluster.url, timeout=GUARD_S)


def finished(frames: list[Frame]) -> set[str]:
    """The site paths whose fetch has completed in ``frames``."""
    urls = {f.data["tool_call_id"]: f.data["args"]["url"] for f in frames if f.event == "tool_start"}
    return {urlsplit(urls[f.data["tool_call_id"]]).path for f in frames if f.event == "tool_complete"}


async def read_until(frames: AsyncIterator[Frame], done: Callable[[list[Frame]], bool]) -> list[Frame]:
    """``frames`` up to the one after which ``done`` holds (the rest left to read)."""
    got: list[Frame] = []
    async for frame in frames:
        got.append(frame)
        if done(got):
            return got
    raise AssertionError(f"the stream ended first: {[f.event for f in got]}")


async def rest(frames: AsyncIterator[Frame]) -> list[Frame]:
    """The ``frames`` left until the stream ends, or breaks off (its replica went away)."""
    got: list[Frame] = []
    try:
        async for frame in frames:
            got.append(frame)
    except httpx.TransportError:
        pass
    return got


async def follow(
    c: httpx.AsyncClient, thread: str, run_id: str, got: Sequence[Frame] = ()
) -> tuple[list[Frame], list[str]]:
    """The run's events through the balancer from after ``got`` to ``run_end``, joining again with
    ``Last-Event-ID`` whenever a stream ends without it; also the replica of each join."""
    got, servers = list(got), []
    while not got or got[-1].event != "run_end":
        headers = {"Last-Event-ID": got[-1].id} if got else {}
        async with c.stream("GET", f"/threads/{thread}/runs/{run_id}/stream", headers=headers) as r:
            assert r.status_code == 200, await r.aread()
            servers.append(r.headers["x-agent-server"])
            got += await rest(events(r))
    return got, servers


def keyed(frames: list[Frame]) -> list[tuple]:
    return [(f.id, f.event, f.data) for f in frames]


def attempts(frames: list[Frame]) -> list[int]:
    return [f.data["attempt"] for f in frames if f.event == "run_start"]


def assert_one_end(frames: list[Frame], status: str) -> None:
    """One ``run_end``, the last event, with ``status``; no event twice."""
    types = [f.event for f in frames]
    assert types.count("run_end") == 1 and types[-1] == "run_end", types
    assert frames[-1].data["status"] == status, frames[-1].data
    ids = [f.id for f in frames]
    assert len(ids) == len(set(ids)), "an event was delivered twice"


def assert_continued(model: OpenAIServer) -> None:
    """The model was asked twice, the second time with the question once and the three fetches'
    results: the run went on from its checkpoint with the recorded results (not from its question
    again, nor on two replicas)."""
    assert len(model.script.requests) == 2, [m["role"] for r in model.script.requests for m in r["messages"]]
    messages = model.script.requests[1]["messages"]
    said = [(m["role"], m["content"]) for m in messages if m["role"] in ("user", "tool")]
    assert [m["content"] for m in messages if m["role"] == "user"] == [QUESTION], said
    results = [m["content"] for m in messages if m["role"] == "tool"]
    answers = ["/a answer 1", "/b answer 1", "/hang answer 2"]
    assert len(results) == 3 and all(a in r for a, r in zip(answers, results, strict=True)), results


async def runner(cluster: Cluster, run_id: str) -> Replica:
    """The replica running the run's first attempt."""
    replica = await cluster.holder(run_id)
    assert replica is not None, f"run {run_id} ended before the case could act on its replica"
    return replica


async def start(c: httpx.AsyncClient, thread: str, question: str = QUESTION) -> tuple[str, str]:
    """A background run through the balancer: its id and the replica that answered."""
    r = await c.post(f"/threads/{thread}/runs", json={"input": question})
    assert r.status_code == 202, r.text
    return r.json()["run_id"], r.headers["x-agent-server"]


async def idle(url: str) -> bool:
    """Whether the replica at ``url`` answers and holds no run (``agent_runs_held``: runs it has
    started and not ended), asked directly."""
    try:
        async with httpx.AsyncClient(timeout=2) as c:
            text = (await c.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return False
    family = next(f for f in text_string_to_metric_families(text) if f.name == "agent_runs_held")
    return family.samples[0].value == 0


async def mid_tools(site: FetchSite, thread: str) -> None:
    """The run sits mid-tools: ``/hang`` held, and ``/a``'s and ``/b``'s results recorded (its
    step's pending writes), so a replica stopped now leaves finished tools for the next to keep."""
    await site.arrived("/hang")

    async def recorded() -> bool:
        texts = [text async for text in stored(thread)]
        return all(any(answer in text for text in texts) for answer in ("/a answer 1", "/b answer 1"))

    await eventually(recorded, "the results of /a and /b recorded in PostgreSQL")


async def stored(thread: str) -> AsyncIterator[str]:
    """The text of every checkpoint of ``thread`` and of every write pending on one, from PostgreSQL."""
    async with open_checkpointer(POSTGRES_URL) as saver:
        async for checkpoint in saver.alist({"configurable": {"thread_id": thread}}):
            yield repr(checkpoint.checkpoint["channel_values"])
            yield repr(checkpoint.pending_writes)


async def test_a_dropped_stream_resumes_through_the_balancer_on_another_replica_missing_nothing(cluster, site, thread):
    body = {"input": QUESTION, "on_disconnect": "continue"}
    async with client(cluster) as c, asyncio.timeout(GUARD_S):
        async with c.stream("POST", f"/threads/{thread}/runs/stream", json=body) as r:
            assert r.status_code == 200, await r.aread()
            first = r.headers["x-agent-server"]
            before = await read_until(events(r), lambda got: finished(got) == {"/a", "/b"})
        run_id = before[0].data["run_id"]
        await site.arrived("/hang")  # the client is gone, the run goes on, held by /hang
        cluster.balancer.drain(first)
        resume = {"Last-Event-ID": before[-1].id}
        async with c.stream("POST", f"/threads/{thread}/runs/stream", json=body, headers=resume) as r:
            assert r.status_code == 200, await r.aread()
            second = r.headers["x-agent-server"]
            site.release("/hang")
            after = await rest(events(r))
        async with c.stream("GET", f"/threads/{thread}/runs/{run_id}/stream") as r:
            whole = await rest(events(r))

    assert second != first, "the resume landed on the replica the stream dropped from"
    assert keyed(before + after) == keyed(whole), "the two halves are not the run's log"
    assert_one_end(whole, "done")
    assert site.counts() == {"/a": 1, "/b": 1, "/hang": 1}


async def test_b_a_run_whose_replica_is_killed_mid_tools_finishes_on_another_without_repeating_finished_tools(
    cluster, site, thread, model
):
    async with client(cluster) as c, asyncio.timeout(GUARD_S):
        run_id, asked = await start(c, thread)
        a = await runner(cluster, run_id)
        async with c.stream("GET", f"/threads/{thread}/runs/{run_id}/stream") as r:
            before = await read_until(events(r), lambda got: finished(got) == {"/a", "/b"})
        await mid_tools(site, thread)
        a.kill()
        killed = time.monotonic()
        b = await cluster.holder(run_id, attempt=2)
        took_over_s = time.monotonic() - killed
        site.release("/hang")
        got, servers = await follow(c, thread, run_id, before)
    row = await run_row(run_id)

    assert attempts(got) == [1, 2], attempts(got)
    assert_one_end(got, "done")
    assert_continued(model)
    assert site.counts() == {"/a": 1, "/b": 1, "/hang": 2}, "a finished fetch ran again, or the open one did not"
    assert "".join(f.data["text"] for f in got if f.event == "content") == ANSWER
    assert b is not None and b is not a, "the takeover ended before its open fetch was answered"
    assert (row["status"], row["attempt"]) == ("done", 2)
    print(f"run {run_id} (asked on {asked}, run by {a.name}) taken over by {b.name} {took_over_s:.2f} s after the kill")


async def test_c_a_cancel_through_the_balancer_stops_the_run_on_the_replica_that_runs_it(cluster, site, thread):
    async with client(cluster) as c, asyncio.timeout(GUARD_S):
        run_id, _ = await start(c, thread)
        a = await runner(cluster, run_id)
        hang = await site.arrived("/hang")
        cluster.balancer.drain(a.name)
        cancel = await c.post(f"/threads/{thread}/runs/{run_id}/cancel")
        got, _ = await follow(c, thread, run_id)
        await eventually(lambda: hang.closed, "the held fetch's connection to be closed")
    row = await run_row(run_id)

    assert cancel.headers["x-agent-server"] != a.name
    assert (cancel.status_code, cancel.json()["status"]) == (202, "cancelling"), cancel.text
    assert_one_end(got, "cancelled")
    assert not hang.answered and site.count("/hang") == 1
    assert row["status"] == "cancelled"


async def test_d_a_frozen_replica_writes_nothing_to_the_run_another_took_over(cluster, site, thread, model):
    mine = "/hang answer 1"
    async with client(cluster) as c, asyncio.timeout(GUARD_S):
        run_id, _ = await start(c, thread)
        a = await runner(cluster, run_id)
        await mid_tools(site, thread)
        a.freeze()
        await cluster.balancer.until_status(a.name, "DOWN")  # its checks time out
        b = await cluster.holder(run_id, attempt=2)  # its lease lapsed: another replica took the run over
        site.release("/hang", 1)  # the frozen replica's fetch is answered: it reads it as it wakes
        await eventually(lambda: site.of("/hang")[0].answered, "the frozen replica's fetch to be answered")
        a.thaw()
        await eventually(lambda: idle(a.url), "the woken replica to let its run go")
        await cluster.balancer.until_status(a.name, "UP")
        site.release("/hang")
        got, _ = await follow(c, thread, run_id)
        texts = [text async for text in stored(thread)]
    row = await run_row(run_id)

    assert a.alive
    assert attempts(got) == [1, 2]
    assert_one_end(got, "done")
    assert not [f.event for f in got if mine in repr(f.data)], "the event log took a write of the frozen replica"
    assert any(QUESTION in t for t in texts), "the reading of PostgreSQL found not even the question"
    assert not [t for t in texts if mine in t], "PostgreSQL took a write of the frozen replica"
    assert_continued(model)
    assert b is not None and b is not a, "the takeover ended before its open fetch was answered"
    results = [f.data["content"] for f in got if f.event == "tool_result" and "/hang" in f.data["content"]]
    assert len(results) == 1 and "/hang answer 2" in results[0], results
    assert (row["status"], row["attempt"]) == ("done", 2)
    assert ANSWER in texts[0], "the newest checkpoint holds no answer"


@pytest.mark.parametrize(
    ("cluster", "handed_over"),
    [((3, {"AGENT_DRAIN_S": "10"}), False), ((2, {"AGENT_DRAIN_S": "1"}), True)],
    ids=["stream-finishes-in-the-drain", "stream-continues-elsewhere-after-it"],
    indirect=["cluster"],
)
async def test_e_a_replica_given_sigterm_gets_no_new_runs_and_its_open_stream_ends_with_run_end(
    cluster, site, thread, threads, handed_over
):
    async with client(cluster) as c, asyncio.timeout(GUARD_S):
        async with c.stream("POST", f"/threads/{thread}/runs/stream", json={"input": QUESTION}) as r:
            assert r.status_code == 200, await r.aread()
            stream = events(r)
            before = await read_until(stream, lambda got: finished(got) == {"/a", "/b"})
            run_id = before[0].data["run_id"]
            leaving = await runner(cluster, run_id)
            await site.arrived("/hang")
            leaving.terminate()
            out_s = await cluster.balancer.until_status(leaving.name, "DOWN", OUT_OF_ROTATION_S)
            threads += [f"{thread}-new{n}" for n in range(4)]
            landed = [await start(c, new, "hello") for new in threads[1:]]
            if not handed_over:
                site.release("/hang")
            after = await rest(stream)
        site.release("/hang")
        got, servers = await follow(c, thread, run_id, before + after)
        ends = [(await follow(c, new, run))[0][-1].data["status"] for new, (run, _) in zip(threads[1:], landed, strict=True)]
        code = await asyncio.to_thread(leaving.wait_exit)

    assert leaving.name not in [server for _, server in landed], landed
    assert ends == ["done"] * 4
    assert_one_end(got, "done")
    if handed_over:
        assert (before + after)[-1].event != "run_end" and servers, "the stream outlived the drain"
        assert attempts(got) == [1, 2] and leaving.name not in servers
        assert site.counts() == {"/a": 1, "/b": 1, "/hang": 2}
    else:
        assert (before + after)[-1].event == "run_end" and not servers, "the stream did not finish in the drain"
        assert attempts(got) == [1] and site.counts() == {"/a": 1, "/b": 1, "/hang": 1}
    assert code == 0
    print(f"{leaving.name} out of rotation {out_s:.2f} s after SIGTERM")
