"""The result cache: alone in the real graph (one ``ResultCache`` wrapper), on each backend,
and through the whole engine across a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from redis import Redis

from agent_ng.engine.result_cache import ResultCache, cache_key
from agent_ng.engine.store import MemoryToolStore
from agent_ng.engine.stores import open_tool_store
from agent_ng.graph.agent import build_graph
from agent_ng.tools.registry import configure
from tests.helpers.graph_runs import ask, collect, config, of_type, per_call, settings, tool_messages
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.system import REDIS_URL, need
from tests.helpers.tool_stores import KINDS, open_test_store


def counted_tools():
    """``square`` (cacheable) and ``cube`` (not), each counting its own runs by argument."""
    runs: Counter[tuple[str, int]] = Counter()

    @tool
    def square(x: int) -> int:
        """x squared."""
        runs["square", x] += 1
        return x * x

    @tool
    async def cube(x: int) -> int:
        """x cubed."""
        runs["cube", x] += 1
        return x**3

    return [configure(square, cacheable=True), cube], runs


def turns(*turn_calls) -> ScriptedModel:
    replies = []
    for call_list in turn_calls:
        replies += [calls(*call_list), Reply(text="ok")]
    return ScriptedModel(replies=replies)


def test_the_key_is_canonical_json_of_name_and_arguments():
    assert cache_key("f", {"a": 1, "b": [1, 2]}) == cache_key("f", {"b": [1, 2], "a": 1})
    assert cache_key("f", {"a": 1}) != cache_key("g", {"a": 1})
    assert cache_key("f", {"a": 1}) != cache_key("f", {"a": "1"})
    assert cache_key("f", {"a": object()}) is None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_repeated_call_is_answered_from_the_cache_among_misses(kind, tmp_path):
    tools, runs = counted_tools()
    model = turns(
        [("square", {"x": 2}), ("square", {"x": 3}), ("cube", {"x": 2})],
        [("square", {"x": 2}), ("square", {"x": 4}), ("square", {"x": 3}), ("cube", {"x": 2})],
    )
    async with open_test_store(kind, tmp_path) as store:
        graph = build_graph(
            model,
            tools,
            InMemorySaver(),
            settings(max_concurrency=4),
            tool_wrappers=[ResultCache(store, default_ttl_s=60)],
        )
        await collect(graph, ask("first"))
        events = await collect(graph, ask("second"))

    assert runs == {("square", 2): 1, ("square", 3): 1, ("square", 4): 1, ("cube", 2): 2}
    hit_2, miss_4, hit_3, cube_2 = model.replies[2].ids
    starts = {e.tool_call_id: e for e in of_type(events, "tool_start")}
    completes = {e.tool_call_id: e for e in of_type(events, "tool_complete")}
    assert {i: starts[i].cached for i in starts} == {
        hit_2: True,
        miss_4: False,
        hit_3: True,
        cube_2: False,
    }
    assert {i: completes[i].cached for i in completes} == {
        hit_2: True,
        miss_4: False,
        hit_3: True,
        cube_2: False,
    }
    assert starts[hit_2].eta_s == 0.0
    for types in per_call(events).values():
        assert types == ["tool_call", "tool_start", "tool_result", "tool_complete"]
    seen = tool_messages(model.seen[3])
    assert [seen[i].text for i in (hit_2, miss_4, hit_3, cube_2)] == ["4", "16", "9", "8"]
    assert all(seen[i].status == "success" for i in (hit_2, hit_3))


async def test_errors_are_never_cached():
    attempts = []

    @tool
    def flaky(x: int) -> int:
        """Fails on its first run, then works."""
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("not yet")
        return x

    configure(flaky, cacheable=True)
    model = turns([("flaky", {"x": 1})], [("flaky", {"x": 1})], [("flaky", {"x": 1})])
    graph = build_graph(
        model,
        [flaky],
        InMemorySaver(),
        settings(),
        tool_wrappers=[ResultCache(MemoryToolStore(), default_ttl_s=60)],
    )
    first = await collect(graph, ask("1"))
    second = await collect(graph, ask("2"))
    third = await collect(graph, ask("3"))

    assert of_type(first, "tool_error") and not of_type(second, "tool_error")
    assert attempts == [1, 1]
    assert of_type(second, "tool_start")[0].cached is False
    assert of_type(third, "tool_start")[0].cached is True


class CountedStore(MemoryToolStore):
    """Sets ``looked_up`` once ``twins`` lookups happened. A memory lookup does not suspend, so
    a call that looked up reaches the single-flight check in the same step."""

    def __init__(self, twins: int) -> None:
        super().__init__()
        self.lookups, self.twins, self.looked_up = 0, twins, asyncio.Event()

    async def cached(self, key, now):
        self.lookups += 1
        if self.lookups == self.twins:
            self.looked_up.set()
        return await super().cached(key, now)


def held_tool(fail_first: bool):
    """Cacheable ``lookup``: counts its runs, holds each until the test lets it go."""
    runs: list[int] = []
    release = asyncio.Event()

    @tool
    async def lookup(x: int) -> int:
        """Look x up."""
        runs.append(x)
        await release.wait()
        if fail_first and len(runs) == 1:
            raise RuntimeError("lookup failed")
        return x * 10

    return configure(lookup, cacheable=True), runs, release


async def run_twins(fail_first: bool):
    """Three identical calls in one turn; the tool is released once all three looked up."""
    lookup, runs, release = held_tool(fail_first)
    store = CountedStore(twins=3)
    model = turns([("lookup", {"x": 7})] * 3)
    graph = build_graph(
        model, [lookup], InMemorySaver(), settings(max_concurrency=3),
        tool_wrappers=[ResultCache(store, default_ttl_s=60)],
    )
    run = asyncio.create_task(collect(graph, ask("twins")))
    async with asyncio.timeout(10):
        await store.looked_up.wait()
    assert runs == [7], "the first call runs, the other two wait for it"
    release.set()
    return await run, runs, model


async def test_identical_calls_in_flight_run_once_and_the_others_get_its_result():
    events, runs, model = await run_twins(fail_first=False)

    assert runs == [7]
    seen = tool_messages(model.seen[1])
    assert [m.text for m in seen.values()] == ["70", "70", "70"]
    assert sorted(e.cached for e in of_type(events, "tool_start")) == [False, True, True]
    for types in per_call(events).values():
        assert types == ["tool_call", "tool_start", "tool_result", "tool_complete"]


async def test_when_the_first_of_identical_calls_fails_the_others_run_themselves():
    events, runs, model = await run_twins(fail_first=True)

    assert runs == [7, 7, 7]
    texts = sorted(m.text for m in tool_messages(model.seen[1]).values())
    assert texts[:2] == ["70", "70"] and "lookup failed" in texts[2]
    assert len(of_type(events, "tool_error")) == 1


async def test_a_call_waiting_on_a_twin_in_a_cancelled_run_runs_itself():
    """Two runs (two threads) of one graph ask the same cacheable call; the first run is
    cancelled while its call runs: the second run's call then runs the tool itself."""
    lookup, runs, release = held_tool(fail_first=False)
    store = CountedStore(twins=2)
    model = ScriptedModel(replies=[calls(("lookup", {"x": 7})), calls(("lookup", {"x": 7})), Reply(text="ok")])
    graph = build_graph(
        model, [lookup], InMemorySaver(), settings(),
        tool_wrappers=[ResultCache(store, default_ttl_s=60)],
    )
    first = asyncio.create_task(collect(graph, ask("a"), config("thread-a")))
    second = asyncio.create_task(collect(graph, ask("b"), config("thread-b")))
    async with asyncio.timeout(10):
        await store.looked_up.wait()
    assert runs == [7]

    first.cancel()
    await asyncio.wait([first])
    release.set()
    events = await second

    assert runs == [7, 7]
    assert [e.content for e in of_type(events, "tool_result")] == ["70"]
    assert of_type(events, "tool_start")[0].cached is False
    assert events[-1].status == "done"


async def test_an_entry_expires_after_its_ttl_on_the_injected_clock():
    tools, runs = counted_tools()
    now = [1000.0]
    graph = build_graph(
        turns(*[[("square", {"x": 7})]] * 3),
        tools,
        InMemorySaver(),
        settings(),
        tool_wrappers=[ResultCache(MemoryToolStore(), default_ttl_s=10, clock=lambda: now[0])],
    )
    cached = []
    for t in (1000.0, 1009.9, 1010.0):
        now[0] = t
        cached.append(of_type(await collect(graph, ask(str(t))), "tool_start")[0].cached)

    assert cached == [False, True, False]
    assert runs["square", 7] == 2


async def test_a_tool_s_own_ttl_wins_over_the_default():
    tools, runs = counted_tools()
    configure(tools[0], cacheable=True, cache_ttl_s=100)
    now = [0.0]
    graph = build_graph(
        turns(*[[("square", {"x": 7})]] * 2),
        tools,
        InMemorySaver(),
        settings(),
        tool_wrappers=[ResultCache(MemoryToolStore(), default_ttl_s=10, clock=lambda: now[0])],
    )
    await collect(graph, ask("a"))
    now[0] = 50.0
    assert of_type(await collect(graph, ask("b")), "tool_start")[0].cached is True
    assert runs["square", 7] == 1


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    """A persistent store's URL and key prefix; Redis keys are deleted afterwards."""
    prefix = f"agent-ng-test:{uuid.uuid4().hex}:"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tool_engine.db'}", prefix
        return
    need("redis")
    yield REDIS_URL, prefix
    client = Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_a_second_graph_over_the_same_store_hits_the_cache(store_url):
    url, prefix = store_url
    tools, runs = counted_tools()
    async with open_tool_store(url, key_prefix=prefix) as store:
        first = build_graph(
            turns([("square", {"x": 5})]), tools, InMemorySaver(), settings(), tool_store=store
        )
        assert of_type(await collect(first, ask()), "tool_start")[0].cached is False

    async with open_tool_store(url, key_prefix=prefix) as reopened:
        model = turns([("square", {"x": 5})])
        second = build_graph(model, tools, InMemorySaver(), settings(), tool_store=reopened)
        events = await collect(second, ask())

    assert runs["square", 5] == 1
    assert of_type(events, "tool_complete")[0].cached is True
    assert [m.text for m in tool_messages(model.seen[1]).values()] == ["25"]


class BrokenStore(MemoryToolStore):
    async def cached(self, key, now):
        raise ConnectionError("store is down")

    async def cache(self, key, content, now, ttl_s):
        raise ConnectionError("store is down")


async def test_a_failing_store_costs_the_cache_but_never_the_answer(caplog):
    tools, runs = counted_tools()
    model = turns([("square", {"x": 3})], [("square", {"x": 3})])
    graph = build_graph(
        model,
        tools,
        InMemorySaver(),
        settings(),
        tool_wrappers=[ResultCache(BrokenStore(), default_ttl_s=60)],
    )
    await collect(graph, ask("a"))
    events = await collect(graph, ask("b"))

    assert runs["square", 3] == 2
    assert of_type(events, "tool_result")[0].content == "9"
    assert "tool cache lookup failed" in caplog.text
