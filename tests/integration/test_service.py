"""The HTTP service over real HTTP: the SSE run stream, cancellation, threads, auth, metrics.

The app runs in a thread (``tests.helpers.live_server``) with a scripted model. Tools that must be
"still running" wait on a ``threading.Event`` the test sets, so what the test sees mid-run is
decided by the test, not by timing; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from agent_ng.contract import FIELDS
from agent_ng.graph.settle import CANCELLED
from agent_ng.service.app import create_app
from agent_ng.service.settings import ServiceSettings
from tests.helpers.graph_runs import until_cancelled
from tests.helpers.live_server import serving
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.sse import events, frames

GUARD_S = 10
QUESTION = {"input": "2+3?"}


def settings(**overrides) -> ServiceSettings:
    return ServiceSettings(
        **{"checkpoint_url": "memory://", "cache_url": "memory://", "system_prompt": "", "api_key": None, **overrides}
    )


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("boom")


def client(base_url: str, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=GUARD_S, **kwargs)


async def run(c: httpx.AsyncClient, thread: str, body: dict = QUESTION) -> list:
    async with (
        asyncio.timeout(GUARD_S),
        c.stream("POST", f"/threads/{thread}/runs/stream", json=body) as r,
    ):
        assert r.status_code == 200, await r.aread()
        return [f async for f in events(r)]


async def test_a_run_streams_one_sse_event_per_agent_event_named_by_its_type():
    model = ScriptedModel(replies=[calls(("add", {"a": 2, "b": 3})), Reply(text="It is five.")])
    with serving(create_app(settings(), model=model, tools=[add])) as url:
        async with client(url) as c:
            got = await run(c, "t1")

    names = [f.event for f in got]
    assert names[0] == "run_start" and names[-1] == "run_end"
    assert names[1:5] == ["tool_call", "tool_start", "tool_result", "tool_complete"]
    for frame in got:
        assert frame.event == frame.data["type"]
        assert set(frame.data) == {"type", "run_id", "thread_id", "t", *FIELDS[frame.event]}
        assert frame.data["thread_id"] == "t1"
    assert "".join(f.data["text"] for f in got if f.event == "content") == "It is five."
    assert got[-1].data["status"] == "done"
    assert got[-1].data["usage"] == {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30}


async def test_events_arrive_while_the_run_goes_on_with_keep_alive_pings_between():
    released = threading.Event()

    @tool
    def hold() -> str:
        """Waits until the test releases it."""
        assert released.wait(GUARD_S)
        return "released"

    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="done")])
    seen: list[str] = []
    with serving(create_app(settings(sse_ping_s=0.05), model=model, tools=[hold])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            async with c.stream("POST", "/threads/t1/runs/stream", json=QUESTION) as r:
                async for frame in frames(r):
                    seen.append(frame.event or f":{frame.comment}")
                    if frame.comment is not None and "tool_start" in seen:
                        assert "run_end" not in seen and not released.is_set()
                        released.set()

    assert seen[-1] == "run_end"
    while_running = seen[seen.index("tool_start") : seen.index("run_end")]
    assert any(s.startswith(":ping") for s in while_running), seen


async def test_a_client_that_goes_away_cancels_the_run_and_the_thread_takes_a_new_run():
    cancelled = []

    @tool
    async def quick() -> str:
        """Finishes at once."""
        return "quick result"

    forever = until_cancelled(cancelled)

    model = ScriptedModel(
        replies=[calls(("quick", {}), ("forever", {})), Reply(text="second answer")]
    )
    with serving(create_app(settings(), model=model, tools=[quick, forever])) as url:
        async with client(url) as c:
            async with (
                asyncio.timeout(GUARD_S),
                c.stream("POST", "/threads/t1/runs/stream", json={"input": "first"}) as r,
            ):
                started, completed = set(), set()
                async for frame in events(r):
                    if frame.event == "tool_start":
                        started.add(frame.data["name"])
                    elif frame.event == "tool_complete":
                        completed.add(frame.data["name"])
                    if started == {"quick", "forever"} and completed == {"quick"}:
                        break  # leaving the block closes the connection mid-tool

            second = await run(c, "t1", {"input": "second"})
            thread = (await c.get("/threads/t1")).json()
            metrics = (await c.get("/metrics")).text

    assert cancelled == ["forever"]
    assert second[-1].data["status"] == "done"
    assert "".join(f.data["text"] for f in second if f.event == "content") == "second answer"

    history = model.seen[1]
    assert [type(m).__name__ for m in history] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "HumanMessage",
    ]
    asked = {call["id"] for call in history[1].tool_calls}
    results = {m.tool_call_id: m for m in history if isinstance(m, ToolMessage)}
    assert set(results) == asked, "every tool call of the cut-off turn has a result"
    by_name = {m.name: m for m in results.values()}
    assert by_name["quick"].content == "quick result" and by_name["quick"].status == "success"
    assert by_name["forever"].content == CANCELLED and by_name["forever"].status == "error"

    assert [m["role"] for m in thread["messages"]] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "user",
        "assistant",
    ]
    assert thread["next"] == []
    assert 'agent_runs_total{status="cancelled"} 1.0' in metrics
    assert 'agent_runs_total{status="done"} 1.0' in metrics


async def waiting(c: httpx.AsyncClient) -> float:
    return samples((await c.get("/metrics")).text)[("agent_runs_waiting", ())]


async def until_waiting(c: httpx.AsyncClient, runs: int) -> None:
    """Poll the metrics until ``runs`` runs wait for their thread (bounded by the caller)."""
    while await waiting(c) != runs:
        await asyncio.sleep(0.01)


async def test_a_second_run_on_a_busy_thread_waits_for_the_first_to_end():
    released = threading.Event()

    @tool
    def hold() -> str:
        """Waits until the test releases it."""
        assert released.wait(GUARD_S)
        return "released"

    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="one"), Reply(text="two")])
    with serving(create_app(settings(), model=model, tools=[hold])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            async with c.stream(
                "POST", "/threads/t1/runs/stream", json={"input": "first"}
            ) as first:
                async for frame in events(first):
                    if frame.event == "tool_start":
                        second = asyncio.create_task(run(c, "t1", {"input": "second"}))
                        await until_waiting(c, 1)
                        busy = await c.delete("/threads/t1")
                        released.set()
            second_events = await second
            assert await waiting(c) == 0

    assert busy.status_code == 409 and "in progress" in busy.json()["detail"]
    assert second_events[-1].data["status"] == "done"
    assert [m.text for m in model.seen[2]][-2:] == ["one", "second"], (
        "the second run saw the first's answer"
    )


@pytest.mark.parametrize(
    ("path", "body", "where", "says"),
    [
        ("/threads/t1/runs/stream", {"input": "   "}, ["body", "input"], "empty"),
        ("/threads/t1/runs/stream", {"input": "x" * 41}, ["body", "input"], "limit is 40"),
        ("/threads/t1/runs/stream", {}, ["body", "input"], "Field required"),
        (
            "/threads/t1/runs/stream",
            {"input": "hi", "config": {"thread_id": "other"}},
            ["body", "config", "thread_id"],
            "Extra inputs",
        ),
        (
            "/threads/t1/runs/stream",
            {"input": "hi", "config": {"max_concurrency": 0}},
            ["body", "config", "max_concurrency"],
            "greater than or equal to 1",
        ),
        ("/threads/bad%20id/runs/stream", {"input": "hi"}, ["path", "thread_id"], "an id is"),
        (
            "/agui",
            {"threadId": "t1", "runId": "r1", "messages": []},
            ["body", "messages"],
            "last message must be a user message",
        ),
        (
            "/agui",
            {
                "threadId": "t 1",
                "runId": "r1",
                "messages": [{"id": "m", "role": "user", "content": "hi"}],
            },
            ["body", "threadId"],
            "an id is",
        ),
        ("/agui", {"runId": "r1", "messages": []}, ["body", "threadId"], "Field required"),
    ],
    ids=[
        "blank",
        "too-long",
        "missing",
        "thread-in-config",
        "bad-concurrency",
        "bad-thread-id",
        "agui-no-question",
        "agui-bad-thread",
        "agui-missing-thread",
    ],
)
async def test_bad_requests_get_a_422_that_says_what_is_wrong_and_start_nothing(
    path, body, where, says
):
    model = ScriptedModel(replies=[])
    with serving(create_app(settings(max_input_chars=40), model=model, tools=[])) as url:
        async with client(url) as c:
            r = await c.post(path, json=body)
            threads = (await c.get("/threads")).json()

    assert r.status_code == 422
    [error] = [d for d in r.json()["detail"] if d["loc"] == where]
    assert says in error["msg"]
    assert threads == [] and model.seen == []


async def test_a_body_over_the_size_limit_is_refused_before_it_is_read():
    with serving(
        create_app(settings(max_body_bytes=100), model=ScriptedModel(replies=[]), tools=[])
    ) as url:
        async with client(url) as c:
            r = await c.post("/threads/t1/runs/stream", json={"input": "x" * 200})
    assert r.status_code == 413 and "limit is 100" in r.json()["detail"]


async def test_with_an_api_key_every_route_but_healthz_needs_the_bearer_token():
    model = ScriptedModel(replies=[Reply(text="hello")])
    app = create_app(settings(api_key="s3cret"), model=model, tools=[])
    with serving(app) as url:
        async with (
            client(url) as anonymous,
            client(url, headers={"Authorization": "Bearer wrong"}) as wrong,
        ):
            assert (await anonymous.get("/healthz")).status_code == 200
            for c in (anonymous, wrong):
                for method, path in [
                    ("GET", "/threads"),
                    ("GET", "/threads/t1"),
                    ("GET", "/threads/t1/history"),
                    ("DELETE", "/threads/t1"),
                    ("GET", "/metrics"),
                    ("POST", "/threads/t1/runs/stream"),
                    ("POST", "/agui"),
                ]:
                    r = await c.request(method, path, json=QUESTION)
                    assert r.status_code == 401, (method, path)
                    assert r.headers["www-authenticate"] == "Bearer"
            page = await anonymous.get("/")
        async with client(url, headers={"Authorization": "Bearer s3cret"}) as c:
            got = await run(c, "t1")
            listed = (await c.get("/threads")).json()

    assert page.status_code == 200 and "agent-ng" in page.text
    assert got[-1].data["status"] == "done"
    assert [t["thread_id"] for t in listed] == ["t1"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_threads_can_be_listed_read_and_deleted(store, tmp_path):
    url_of_store = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'threads.db'}"}
    model = ScriptedModel(
        replies=[calls(("add", {"a": 1, "b": 2})), Reply(text="three"), Reply(text="hi again")]
    )
    with serving(
        create_app(settings(checkpoint_url=url_of_store[store]), model=model, tools=[add])
    ) as url:
        async with client(url) as c:
            await run(c, "older", {"input": "what is 1+2?"})
            await run(c, "newer", {"input": "hello there"})
            listed = (await c.get("/threads")).json()
            one = (await c.get("/threads", params={"limit": 1})).json()
            state = (await c.get("/threads/older")).json()
            history = (await c.get("/threads/older/history")).json()
            missing = await c.get("/threads/nope")
            deleted = await c.delete("/threads/older")
            after = (await c.get("/threads")).json()
            gone = await c.get("/threads/older")
            again = await c.delete("/threads/older")

    assert [(t["thread_id"], t["title"], t["messages"]) for t in listed] == [
        ("newer", "hello there", 2),
        ("older", "what is 1+2?", 4),
    ]
    assert len(one) == 1
    assert [m["role"] for m in state["messages"]] == ["user", "assistant", "tool", "assistant"]
    call = state["messages"][1]["tool_calls"][0]
    assert call["name"] == "add" and call["args"] == {"a": 1, "b": 2}
    assert state["messages"][2] == {
        **state["messages"][2],
        "tool_call_id": call["id"],
        "content": "3",
        "status": "success",
    }
    assert state["messages"][3]["content"] == "three" and state["next"] == []
    assert history[0]["messages"] == 4 and history[-1]["messages"] == 0
    assert [h["step"] for h in history] == sorted((h["step"] for h in history), reverse=True)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert deleted.status_code == 204
    assert [t["thread_id"] for t in after] == ["newer"]
    assert gone.status_code == 404 and again.status_code == 404


class CacheHits:
    """A collector as another part of the agent would register one (the metrics hook)."""

    def collect(self):
        family = CounterMetricFamily("agent_tool_cache_hits", "Tool results served from cache.")
        family.add_metric([], 7)
        yield family


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_runs_tokens_and_tool_calls_and_show_registered_collectors():
    model = ScriptedModel(
        replies=[
            calls(("add", {"a": 1, "b": 1}), ("explode", {})),
            Reply(text="two, and one failed"),
        ]
    )
    app = create_app(settings(), model=model, tools=[add, explode], collectors=[CacheHits()])
    with serving(app) as url:
        async with client(url) as c:
            await run(c, "t1")
            text = (await c.get("/metrics")).text

    got = samples(text)
    assert got[("agent_runs_total", (("status", "done"),))] == 1
    assert got[("agent_runs_active", ())] == 0
    assert got[("agent_run_duration_seconds_count", ())] == 1
    assert got[("agent_first_token_seconds_count", ())] == 1
    assert got[("agent_tokens_total", (("kind", "input"),))] == 20
    assert got[("agent_tokens_total", (("kind", "output"),))] == 10
    assert got[("agent_tool_calls_total", (("outcome", "ok"), ("tool", "add")))] == 1
    assert got[("agent_tool_calls_total", (("outcome", "error"), ("tool", "explode")))] == 1
    assert got[("agent_tool_duration_seconds_count", (("tool", "add"),))] == 1
    assert got[("agent_tool_cache_hits_total", ())] == 7


async def test_a_failing_model_ends_the_stream_with_an_error_event_and_the_service_goes_on():
    model = ScriptedModel(replies=[Reply(text="fine")])  # the second question has no reply
    with serving(create_app(settings(), model=model, tools=[])) as url:
        async with client(url) as c:
            first = await run(c, "t1", {"input": "one"})
            failed = await run(c, "t1", {"input": "two"})
            health = await c.get("/healthz")

    assert first[-1].data["status"] == "done"
    assert failed[-1].event == "run_end" and failed[-1].data["status"] == "error"
    assert "the script has 1 replies" in failed[-1].data["error"]
    assert health.json() == {"status": "ok"}
