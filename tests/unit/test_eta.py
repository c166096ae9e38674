"""ETA: the estimate from past durations, its blend with reported progress, and both in the
events of the real graph."""

from __future__ import annotations

import asyncio
import statistics

import pytest
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.engine.eta import expected_duration
from agent_ng.engine.store import MemoryToolStore
from agent_ng.graph.agent import build_graph
from agent_ng.tools import progress
from agent_ng.tools.progress import remaining_s
from tests.helpers.graph_runs import ask, collect, of_type, settings
from tests.helpers.scripted_model import Reply, ScriptedModel, calls


async def test_no_estimate_below_three_samples_then_the_median():
    store = MemoryToolStore()
    estimate = expected_duration(store)
    for seconds in (1.0, 2.0):
        assert await estimate("fetch") is None
        await store.record("fetch", "ok", seconds)
    assert await estimate("fetch") is None
    await store.record("fetch", "ok", 100.0)
    assert await estimate("fetch") == 2.0


async def test_the_estimate_follows_the_last_twenty_successful_runs_only():
    store = MemoryToolStore()
    for _ in range(30):
        await store.record("fetch", "ok", 50.0)
    for _ in range(11):
        await store.record("fetch", "ok", 1.0)
    await store.record("fetch", "error", None)
    await store.record("fetch", "timeout", None)
    assert await expected_duration(store)("fetch") == 1.0


async def test_an_unreadable_history_gives_no_estimate(caplog):
    class Broken(MemoryToolStore):
        async def durations(self, tool, limit):
            raise ConnectionError("down")

    assert await expected_duration(Broken())("fetch") is None
    assert "no ETA" in caplog.text


@pytest.mark.parametrize(
    ("fraction", "elapsed", "expected", "left"),
    [
        (None, 1.0, None, None),
        (0.0, 1.0, None, None),
        (0.5, 2.0, None, 2.0),
        (None, 1.0, 5.0, 4.0),
        (None, 6.0, 5.0, None),
        (0.25, 1.0, 10.0, 0.25 * 3.0 + 0.75 * 9.0),
        (0.5, 12.0, 10.0, 12.0),
        (1.0, 3.0, 10.0, 0.0),
    ],
    ids=["nothing", "no-progress-yet", "pace", "history", "past-usual", "blend", "overdue", "done"],
)
def test_remaining_time_blends_pace_and_history_by_fraction_done(fraction, elapsed, expected, left):
    assert remaining_s(fraction, elapsed, expected) == pytest.approx(left)


async def test_tool_start_carries_an_eta_once_three_runs_are_known():
    @tool
    async def tick() -> str:
        """Returns at once."""
        return "tock"

    store = MemoryToolStore()
    model = ScriptedModel(
        replies=[r for _ in range(4) for r in (calls(("tick", {})), Reply(text="ok"))]
    )
    graph = build_graph(model, [tick], InMemorySaver(), settings(), tool_store=store)
    etas = []
    for turn in range(4):
        if turn == 3:
            expected = statistics.median(await store.durations("tick", 20))
        etas.append(of_type(await collect(graph, ask(str(turn))), "tool_start")[0].eta_s)

    assert etas[:3] == [None, None, None]
    assert etas[3] == expected and expected > 0


async def test_progress_events_blend_the_tool_s_history_into_their_eta():
    @tool
    def halves() -> str:
        """Reports half, then all."""
        progress.report(0.5, "half")
        progress.report(1.0, "all")
        return "done"

    store = MemoryToolStore()
    for _ in range(3):
        await store.record("halves", "ok", 10.0)
    model = ScriptedModel(replies=[calls(("halves", {})), Reply(text="ok")])
    graph = build_graph(model, [halves], InMemorySaver(), settings(), tool_store=store)
    events = await collect(graph, ask())

    assert of_type(events, "tool_start")[0].eta_s == 10.0
    half, whole = of_type(events, "tool_progress")
    assert half.eta_s == pytest.approx(remaining_s(0.5, half.elapsed_s, 10.0))
    assert whole.eta_s == 0.0


async def test_calls_of_one_tool_starting_together_share_one_read():
    class Counting(MemoryToolStore):
        reads = 0

        async def durations(self, tool, limit):
            Counting.reads += 1
            return await super().durations(tool, limit)

    store = Counting()
    for seconds in (1.0, 2.0, 3.0):
        await store.record("fetch", "ok", seconds)
    estimate = expected_duration(store)
    assert await asyncio.gather(*(estimate("fetch") for _ in range(8))) == [2.0] * 8
    assert Counting.reads == 1
    assert await estimate("fetch") == 2.0 and Counting.reads == 2
