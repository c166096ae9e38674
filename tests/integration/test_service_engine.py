"""The service over the tool engine, as ``open_agent`` opens it: cache hits in the run's
events, the engine's per-tool stats and the concurrency groups on ``/metrics``, and a start
on a SQLite tool store named by ``AGENT_CACHE_URL``.

Tools count their own runs, so "answered from the cache" is proved by a counter that did not
move, not by the cached flag alone. Mid-run figures are read while a tool waits on a
``threading.Event`` the test sets; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool

from agent_ng.engine.stores import open_tool_store
from agent_ng.engine.tool_stats import tool_stats
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.graph.settle import CANCELLED
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.thread_lock import hold_thread
from agent_ng.persistence.threads import thread_config
from agent_ng.service.app import create_app
from agent_ng.service.settings import ServiceSettings
from agent_ng.tools.registry import configure
from tests.helpers.live_server import serving
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.sse import events
from tests.integration.test_agui import run_input
from tests.integration.test_service import GUARD_S, QUESTION, client, run, samples, until_waiting
from tests.unit.test_settle import forever, quick


def settings(**overrides) -> ServiceSettings:
    return ServiceSettings(
        **{
            "checkpoint_url": "memory://",
            "cache_url": "memory://",
            "mcp_config": None,
            "system_prompt": "",
            "api_key": None,
            **overrides,
        }
    )


def counted_tools(runs: Counter) -> list:
    @tool
    def square(x: int) -> int:
        """Square an integer."""
        runs["square"] += 1
        return x * x

    @tool
    def note(text: str) -> str:
        """Write a note (has a side effect, so never cached)."""
        runs["note"] += 1
        return f"noted: {text}"

    return [
        configure(square, cacheable=True, concurrency_group="math"),
        configure(note, concurrency_group="math"),
    ]


async def tool_result_stored(graph, thread_id: str) -> bool:
    tasks = (await graph.aget_state(thread_config(thread_id))).tasks
    return any(t.name == "tools" and t.result for t in tasks)


async def drain(events) -> None:
    async for _ in events:
        pass


def by_tool(frames: list, event: str) -> dict[str, dict]:
    return {f.data["name"]: f.data for f in frames if f.event == event}


async def test_a_repeated_cacheable_call_is_served_from_the_cache_and_metrics_count_it(tmp_path):
    runs: Counter = Counter()
    asked = calls(("square", {"x": 7}), ("note", {"text": "hi"}))
    model = ScriptedModel(
        replies=[asked, Reply(text="49"), calls(("square", {"x": 7}), ("note", {"text": "hi"})), Reply(text="49 again")]
    )
    app = create_app(
        settings(cache_url=f"sqlite:///{tmp_path / 'tools.db'}", group_limits={"math": 2}),
        model=model,
        tools=counted_tools(runs),
    )
    with serving(app) as url:
        async with client(url) as c:
            first = await run(c, "t1")
            second = await run(c, "t1")
            text = (await c.get("/metrics")).text

    assert first[-1].data["status"] == second[-1].data["status"] == "done"
    assert {n: e["cached"] for n, e in by_tool(first, "tool_start").items()} == {"square": False, "note": False}
    assert {n: e["cached"] for n, e in by_tool(second, "tool_start").items()} == {"square": True, "note": False}
    assert {n: e["cached"] for n, e in by_tool(second, "tool_complete").items()} == {"square": True, "note": False}
    assert by_tool(second, "tool_result")["square"]["content"] == "49"
    assert runs == {"square": 1, "note": 2}, "the cached call did not run the tool"

    got = samples(text)
    assert got[("agent_ng_tool_calls_total", (("tool", "square"),))] == 2
    assert got[("agent_ng_tool_calls_total", (("tool", "note"),))] == 2
    assert got[("agent_ng_tool_cache_hits_total", (("tool", "square"),))] == 1
    assert got[("agent_ng_tool_cache_hits_total", (("tool", "note"),))] == 0
    assert got[("agent_ng_tool_errors_total", (("tool", "square"),))] == 0
    assert got[("agent_ng_tool_timeouts_total", (("tool", "note"),))] == 0
    assert ("agent_ng_tool_duration_seconds", (("quantile", "0.5"), ("tool", "square"))) in got
    assert got[("agent_ng_group_limit", (("group", "math"),))] == 2
    assert got[("agent_ng_group_running", (("group", "math"),))] == 0
    assert got[("agent_ng_group_waiting", (("group", "math"),))] == 0
    assert got[("agent_runs_total", (("status", "done"),))] == 2, "the service's own metrics stay"


async def test_metrics_show_calls_running_and_waiting_in_a_group_while_a_run_goes_on():
    released = threading.Event()

    @tool
    def hold(n: int) -> str:
        """Waits until the test releases it."""
        assert released.wait(GUARD_S)
        return f"released {n}"

    configure(hold, concurrency_group="slow")
    model = ScriptedModel(replies=[calls(("hold", {"n": 1}), ("hold", {"n": 2})), Reply(text="both")])
    app = create_app(settings(group_limits={"slow": 1}, max_concurrency=3), model=model, tools=[hold])
    with serving(app) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            async with c.stream("POST", "/threads/t1/runs/stream", json={"input": "go"}) as r:
                assert r.status_code == 200
                group = {}
                while group.get("waiting") != 1:
                    got = samples((await c.get("/metrics")).text)
                    group = {k: got[(f"agent_ng_group_{k}", (("group", "slow"),))] for k in ("limit", "running", "waiting")}
                    await asyncio.sleep(0.01)
                released.set()
                await r.aread()
            after = samples((await c.get("/metrics")).text)

    assert group == {"limit": 1, "running": 1, "waiting": 1}
    assert after[("agent_ng_group_running", (("group", "slow"),))] == 0
    assert after[("agent_ng_tool_calls_total", (("tool", "hold"),))] == 2


async def test_the_service_starts_without_mcp_on_the_sqlite_tool_store_agent_cache_url_names(tmp_path, monkeypatch):
    path = tmp_path / "engine.db"
    monkeypatch.setenv("AGENT_CACHE_URL", f"sqlite:///{path}")
    monkeypatch.delenv("AGENT_MCP_CONFIG", raising=False)
    model = ScriptedModel(
        replies=[calls(("calculator", {"expression": "17*23"})), Reply(text="391")] * 2
    )
    app = create_app(ServiceSettings(checkpoint_url="memory://", system_prompt="", api_key=None), model=model)
    with serving(app) as url:
        async with client(url) as c:
            first = await run(c, "t1")
            second = await run(c, "t2")
            health = await c.get("/healthz")

    assert health.status_code == 200
    assert by_tool(first, "tool_result")["calculator"]["content"] == "391"
    assert by_tool(second, "tool_complete")["calculator"]["cached"] is True, "built-in tools keep their specs"
    async with open_tool_store(f"sqlite:///{path}") as store:
        stats = {s.tool: s for s in await tool_stats(store)}
    assert (stats["calculator"].calls, stats["calculator"].cache_hits) == (2, 1), "the stats are in the file"


async def test_a_bad_cache_url_stops_the_start_with_an_error_naming_it():
    app = create_app(settings(cache_url="ftp://nowhere"), model=ScriptedModel(replies=[]), tools=[])
    with pytest.raises(ValueError, match="ftp://nowhere"):
        async with app.router.lifespan_context(app):
            pass


async def test_deleting_a_thread_another_process_is_running_is_refused_and_keeps_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    model = ScriptedModel(replies=[Reply(text="kept")])
    with serving(create_app(settings(checkpoint_url=url), model=model, tools=[])) as base:
        async with client(base) as c, open_checkpointer(url) as other:
            await run(c, "t1")
            rival = build_graph(ScriptedModel(replies=[]), [], other, settings(checkpoint_url=url))
            async with hold_thread(rival, "t1"):
                refused = await c.delete("/threads/t1")
            kept = await c.get("/threads/t1")
            deleted = await c.delete("/threads/t1")

    assert refused.status_code == 409 and "t1" in refused.json()["detail"]
    assert kept.status_code == 200 and kept.json()["messages"][-1]["content"] == "kept"
    assert deleted.status_code == 204


async def test_a_question_on_a_thread_waiting_for_approval_gets_409_and_the_waiting_call_stays():
    runs: Counter = Counter()

    @tool
    def wipe() -> str:
        """Needs a person's approval."""
        runs["wipe"] += 1
        return "wiped"

    configure(wipe, requires_approval=True)
    model = ScriptedModel(replies=[calls(("wipe", {}))])
    with serving(create_app(settings(), model=model, tools=[wipe])) as url:
        async with client(url) as c:
            first = await run(c, "t1")
            refused = await c.post("/threads/t1/runs/stream", json={"input": "never mind"})
            refused_agui = await c.post("/agui", json=run_input("t1", "never mind"))
            thread = (await c.get("/threads/t1")).json()

    assert first[-1].data["status"] == "interrupted"
    for response in (refused, refused_agui):
        assert response.status_code == 409
        assert "'t1' has an unfinished run (calls waiting for approval)" in response.json()["detail"]
    assert thread["next"] == ["tools"], "the call still waits for its approval"
    assert [m["content"] for m in thread["messages"] if m["role"] == "user"] == ["2+3?"]
    assert runs == {} and len(model.seen) == 1


async def test_a_question_on_a_thread_a_crash_left_mid_step_keeps_the_finished_results(tmp_path):
    """The crash is a run cancelled without ``settle``: its finished tool's result is only a
    pending write of the unfinished step, which a plain new question would drop."""
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    async with open_checkpointer(url) as saver:
        crashed = build_graph(
            ScriptedModel(replies=[calls(("quick", {}), ("forever", {}))]),
            [quick, forever],
            saver,
            settings(checkpoint_url=url),
        )
        events = stream(crashed, {"messages": [("user", "go")]}, thread_config("t1"))
        running = asyncio.create_task(drain(events))
        async with asyncio.timeout(GUARD_S):
            while not await tool_result_stored(crashed, "t1"):
                await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    model = ScriptedModel(replies=[Reply(text="after the crash")])
    with serving(create_app(settings(checkpoint_url=url), model=model, tools=[quick, forever])) as base:
        async with client(base) as c:
            got = await run(c, "t1", {"input": "and now?"})

    assert got[-1].data["status"] == "done"
    results = {m.name: m for m in model.seen[0] if isinstance(m, ToolMessage)}
    assert results["quick"].text == "quick result", "the finished tool's result was kept"
    assert results["forever"].text == CANCELLED
    assert model.seen[0][-1].text == "and now?"


async def test_a_question_queued_behind_a_run_that_ends_waiting_for_approval_ends_in_error():
    released = threading.Event()

    @tool
    def hold() -> str:
        """Waits until the test releases it."""
        assert released.wait(GUARD_S)
        return "released"

    @tool
    def wipe() -> str:
        """Needs a person's approval."""
        return "wiped"

    configure(wipe, requires_approval=True)
    model = ScriptedModel(replies=[calls(("hold", {}), ("wipe", {}))])
    with serving(create_app(settings(), model=model, tools=[hold, wipe])) as url:
        async with client(url) as c, asyncio.timeout(GUARD_S):
            async with c.stream("POST", "/threads/t1/runs/stream", json=QUESTION) as first:
                assert first.status_code == 200
                queued = asyncio.create_task(run(c, "t1", {"input": "queued"}))
                await until_waiting(c, 1)
                released.set()
                firsts = [f async for f in events(first)]
            second = await queued

    assert firsts[-1].data["status"] == "interrupted"
    assert [f.event for f in second] == ["run_start", "run_end"]
    assert second[-1].data["status"] == "error"
    assert "calls waiting for approval" in second[-1].data["error"]
    assert len(model.seen) == 1, "the queued question never reached the model"
