"""Tool analytics: outcomes, quantiles, the whole engine under parallel load, Prometheus text
and ``agent-ng stats``."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from agent_ng.cli.main import app
from agent_ng.engine.store import MemoryToolStore, ToolCounts
from agent_ng.engine.stores import open_tool_store
from agent_ng.engine.tool_calls import noted
from agent_ng.engine.tool_stats import (
    ToolStats,
    outcome_of,
    prometheus_text,
    record_outcomes,
    summarize,
    tool_stats,
)
from agent_ng.graph.agent import build_graph
from agent_ng.tools.registry import configure
from tests.helpers.graph_runs import GUARD_S, ask, collect, per_call, settings, tool_messages
from tests.helpers.scripted_model import Reply, ScriptedModel, calls


def message(status: str = "success", **notes) -> ToolMessage:
    return noted(ToolMessage("x", tool_call_id="c", status=status), **notes)


def test_each_result_is_exactly_one_outcome():
    assert outcome_of(message()) == "ok"
    assert outcome_of(message("error")) == "error"
    assert outcome_of(message("error", timed_out=True)) == "timeout"
    assert outcome_of(message(cached=True)) == "cached"


def test_quantiles_come_from_the_histogram_within_its_precision():
    durations = tuple(i / 1000 for i in range(100, 0, -1))  # 0.001 .. 0.100 s
    stats = summarize(ToolCounts("t", calls=100, durations=durations))
    assert stats.p50_s == pytest.approx(0.050, rel=1e-3)
    assert stats.p95_s == pytest.approx(0.095, rel=1e-3)
    assert stats.max_s == pytest.approx(0.100, rel=1e-3)
    assert summarize(ToolCounts("t", calls=2, errors=2)).p50_s is None


async def test_record_outcomes_alone_counts_known_tools_only():
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    store = MemoryToolStore()
    model = ScriptedModel(
        replies=[calls(("add", {"a": 1, "b": 2}), ("no_such_tool", {})), Reply(text="ok")]
    )
    graph = build_graph(
        model, [add], InMemorySaver(), settings(), tool_wrappers=[record_outcomes(store)]
    )
    await collect(graph, ask())

    [counts] = await store.counts()
    assert (counts.tool, counts.calls, counts.errors) == ("add", 1, 0)
    assert len(counts.durations) == 1 and counts.durations[0] >= 0


async def test_the_whole_engine_under_parallel_load_counts_every_outcome():
    parallel = 6
    barrier = asyncio.Barrier(parallel)

    @tool
    async def cube(x: int) -> int:
        """x cubed, once all its siblings are running too."""
        await barrier.wait()
        return x**3

    @tool
    def square(x: int) -> int:
        """x squared."""
        return x * x

    @tool
    def explode() -> str:
        """Always fails."""
        raise RuntimeError("boom")

    @tool
    async def hang() -> str:
        """Never finishes."""
        await asyncio.Event().wait()
        return "never"

    configure(square, cacheable=True)
    configure(hang, timeout_s=0.1)
    first = [("cube", {"x": i}) for i in range(parallel)]
    first += [("square", {"x": 2}), ("square", {"x": 3}), ("explode", {}), ("hang", {})]
    second = [("square", {"x": 2}), ("square", {"x": 3}), ("square", {"x": 4}), ("explode", {})]
    model = ScriptedModel(replies=[calls(*first), Reply(text="a"), calls(*second), Reply(text="b")])
    store = MemoryToolStore()
    graph = build_graph(
        model,
        [cube, square, explode, hang],
        InMemorySaver(),
        settings(max_concurrency=16),
        tool_store=store,
    )
    events = await collect(graph, ask("one")) + await collect(graph, ask("two"))

    for types in per_call(events).values():
        assert types[:3] == ["tool_call", "tool_start", "tool_result"]
        assert types[3:] in (["tool_complete"], ["tool_error"])
    assert len(per_call(events)) == len(first) + len(second)
    cubes = [m.text for m in tool_messages(model.seen[1]).values() if m.name == "cube"]
    assert sorted(cubes, key=int) == [str(i**3) for i in range(parallel)]

    stats = {s.tool: s for s in await tool_stats(store)}
    counts = {name: (s.calls, s.errors, s.timeouts, s.cache_hits) for name, s in stats.items()}
    assert counts == {
        "cube": (6, 0, 0, 0),
        "explode": (2, 2, 0, 0),
        "hang": (1, 0, 1, 0),
        "square": (5, 0, 0, 2),
    }
    assert stats["cube"].p50_s is not None and stats["square"].max_s is not None
    assert stats["explode"].p50_s is None and stats["hang"].max_s is None


def test_prometheus_text_parses_back_to_the_stats():
    text = prometheus_text(
        [
            ToolStats("fetch", 7, 2, 1, 3, 0.5, 1.5, 2.0),
            ToolStats("add", 1, 0, 0, 0, None, None, None),
        ]
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("agent_ng_tool_calls_total", (("tool", "fetch"),))] == 7
    assert samples[("agent_ng_tool_errors_total", (("tool", "fetch"),))] == 2
    assert samples[("agent_ng_tool_timeouts_total", (("tool", "fetch"),))] == 1
    assert samples[("agent_ng_tool_cache_hits_total", (("tool", "fetch"),))] == 3
    assert (
        samples[("agent_ng_tool_duration_seconds", (("quantile", "0.95"), ("tool", "fetch")))]
        == 1.5
    )
    assert samples[("agent_ng_tool_calls_total", (("tool", "add"),))] == 1
    assert not [
        k for k in samples if k[0] == "agent_ng_tool_duration_seconds" and ("tool", "add") in k[1]
    ]


def stats_cli(tmp_path, *args: str):
    env = {"AGENT_CACHE_URL": f"sqlite:///{tmp_path / 'tool_engine.db'}", "COLUMNS": "120"}
    return CliRunner().invoke(app, ["stats", *args], env=env)


def test_agent_ng_stats_prints_a_table_across_runs(tmp_path):
    async def several_runs():
        url = f"sqlite:///{tmp_path / 'tool_engine.db'}"
        for outcome, seconds in [("ok", 0.2), ("ok", 0.4), ("cached", None), ("error", None)]:
            async with open_tool_store(url) as store:
                await store.record("fetch", outcome, seconds)
        async with open_tool_store(url) as store:
            await store.record("add", "timeout", None)

    asyncio.run(asyncio.wait_for(several_runs(), GUARD_S))
    result = stats_cli(tmp_path)

    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells[1:]
        for line in result.output.splitlines()
        if (cells := [c.strip() for c in line.split("│")[1:-1]])
    }
    assert rows["fetch"][:4] == ["4", "1", "0", "1"]
    assert rows["fetch"][4:] == ["200 ms", "400 ms", "400 ms"]
    assert rows["add"] == ["1", "0", "1", "0", "-", "-", "-"]

    prometheus = stats_cli(tmp_path, "--prometheus")
    assert prometheus.exit_code == 0
    assert 'agent_ng_tool_calls_total{tool="fetch"} 4.0' in prometheus.output


def test_agent_ng_stats_says_when_nothing_is_recorded(tmp_path):
    result = stats_cli(tmp_path)
    assert result.exit_code == 0
    assert "No tool calls recorded yet" in result.output


async def test_a_store_that_fails_every_call_never_fails_the_tool_call(caplog):
    class Down(MemoryToolStore):
        def __getattribute__(self, name):
            if name in ("cached", "cache", "record", "durations", "recorded_result", "record_result"):
                raise ConnectionError("the tool store is down")
            return super().__getattribute__(name)

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    configure(add, cacheable=True)
    model = ScriptedModel(replies=[calls(("add", {"a": 1, "b": 2})), Reply(text="ok")])
    graph = build_graph(model, [add], InMemorySaver(), settings(), tool_store=Down())
    await collect(graph, ask())

    [result] = tool_messages(model.seen[1]).values()
    assert (result.status, result.text) == ("success", "3")
    assert "recording add's outcome failed" in caplog.text
