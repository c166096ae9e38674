"""Concurrency groups: the gate, the adaptive limit, and both through the graph.

Counts are taken inside the tools; every wait is on an event the test controls, bounded by
``asyncio.timeout``. Time for the adaptive limit is a fake clock the test advances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.engine.chain import group_config, group_limits_of
from agent_ng.engine.concurrency import AdaptiveLimit, Gate, GroupConfig, GroupLimits
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import AgentEvent, stream
from agent_ng.settings import Settings
from agent_ng.tools import progress
from agent_ng.tools.registry import configure
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settings(**overrides) -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="", **overrides)


def ask(text: str = "go") -> dict:
    return {"messages": [HumanMessage(text)]}


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (the caller bounds it with a timeout)."""
    while not condition():
        await asyncio.sleep(0)


# --- Gate -------------------------------------------------------------------------------


async def test_gate_admits_up_to_its_limit_in_arrival_order():
    gate = Gate(2)
    order: list[int] = []

    async def holder(i: int, release: asyncio.Event) -> None:
        await gate.acquire()
        order.append(i)
        await release.wait()
        gate.release()

    releases = [asyncio.Event() for _ in range(4)]
    async with asyncio.timeout(GUARD_S):
        tasks = [asyncio.create_task(holder(i, releases[i])) for i in range(4)]
        await until(lambda: gate.waiting == 2)
        assert order == [0, 1] and gate.running == 2
        releases[1].set()
        await until(lambda: order == [0, 1, 2])
        gate.set_limit(3)
        await until(lambda: order == [0, 1, 2, 3])
        for release in releases:
            release.set()
        await asyncio.gather(*tasks)
    assert gate.running == 0 and gate.waiting == 0


async def test_gate_lowered_limit_admits_no_one_until_below_it():
    gate = Gate(2)
    await gate.acquire()
    await gate.acquire()
    gate.set_limit(1)
    gate.release()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert not waiter.done() and gate.waiting == 1
    gate.release()
    async with asyncio.timeout(GUARD_S):
        await waiter
    assert gate.running == 1


async def test_a_cancelled_waiter_leaves_no_slot_behind():
    gate = Gate(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await until(lambda: gate.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0 and gate.running == 1

    granted_then_cancelled = asyncio.create_task(gate.acquire())
    await until(lambda: gate.waiting == 1)
    gate.release()  # grants the slot to the waiter...
    granted_then_cancelled.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await granted_then_cancelled
    assert gate.running == 0
    await gate.acquire()
    assert gate.running == 1


# --- AdaptiveLimit ----------------------------------------------------------------------


def run_wave(limit: AdaptiveLimit, clock: FakeClock, latency: float, size: int | None = None, ok: bool = True) -> None:
    """``size`` calls (default: the current limit) start together and end ``latency`` later."""
    starts = [limit.begin() for _ in range(size or limit.current)]
    clock.now += latency
    for started in starts:
        limit.end(started, ok=ok)


def test_adaptive_limit_grows_while_latency_holds_and_the_limit_is_used():
    clock = FakeClock()
    limit = AdaptiveLimit(initial=2, floor=1, ceiling=6, clock=clock)
    seen = []
    for _ in range(8):
        run_wave(limit, clock, 0.1)
        seen.append(limit.current)
    assert seen == sorted(seen) and seen[0] > 2 and seen[-1] == 6


def test_adaptive_limit_does_not_grow_when_the_limit_is_not_used():
    clock = FakeClock()
    limit = AdaptiveLimit(initial=4, floor=1, ceiling=10, clock=clock)
    for _ in range(20):
        run_wave(limit, clock, 0.1, size=1)
    assert limit.current == 4


def test_adaptive_limit_shrinks_on_errors_down_to_the_floor():
    clock = FakeClock()
    limit = AdaptiveLimit(initial=8, floor=2, ceiling=10, clock=clock)
    run_wave(limit, clock, 0.1, size=1, ok=False)
    assert limit.current == 7  # 8 * 0.9
    for _ in range(50):
        run_wave(limit, clock, 0.1, size=1, ok=False)
    assert limit.current == 2


def test_adaptive_limit_falls_when_latency_rises_and_recovers_at_the_new_normal():
    clock = FakeClock()
    limit = AdaptiveLimit(initial=4, floor=1, ceiling=8, clock=clock)
    for _ in range(10):
        run_wave(limit, clock, 0.1)
    assert limit.current == 8
    slow = []
    for _ in range(12):
        run_wave(limit, clock, 0.5)
        slow.append(limit.current)
    assert slow[0] < 8 and min(slow) <= 2, slow
    for _ in range(40):
        run_wave(limit, clock, 0.5)
    assert limit.current > min(slow), "a lasting latency becomes the baseline and the limit grows again"


def test_cancelled_calls_are_not_samples():
    clock = FakeClock()
    limit = AdaptiveLimit(initial=3, floor=1, ceiling=8, clock=clock)
    started = [limit.begin() for _ in range(3)]
    clock.now += 100
    for s in started:
        limit.end(s, ok=None)
    assert limit.current == 3 and limit.in_flight == 0 and limit.baseline_s is None


def test_adaptive_limit_bounds_are_checked():
    with pytest.raises(ValueError, match="need 1 <= floor <= ceiling"):
        AdaptiveLimit(initial=3, floor=4, ceiling=2)
    assert AdaptiveLimit(initial=30, floor=1, ceiling=5).current == 5


# --- wiring -----------------------------------------------------------------------------


def test_group_limits_of_settings_share_one_set_of_gates_per_configuration():
    a = group_limits_of(settings(group_limits={"network": 3}))
    b = group_limits_of(settings(group_limits={"network": 3}))
    c = group_limits_of(settings(group_limits={"network": 4}))
    assert a is b and a is not c
    assert group_limits_of(settings(group_limits={})) is None
    assert c.limits() == {"network": 4}


def test_group_limits_come_from_settings(monkeypatch):
    monkeypatch.setenv("AGENT_GROUP_LIMITS", '{"network": 2, "db": 5}')
    monkeypatch.setenv("AGENT_ADAPTIVE_CONCURRENCY", "true")
    config = group_config(settings())
    assert config == GroupConfig((("db", 5), ("network", 2)), adaptive=True, floor=1, ceiling=16)
    with pytest.raises(ValueError, match="must be >= 1"):
        GroupLimits({"db": 0})


# --- through the graph ------------------------------------------------------------------


def crowd(group_limits: dict[str, int], replies: list[Reply], *, by_settings: bool = False) -> tuple:
    """A graph whose ``net`` tool (group "net") counts how many copies of it run at once.

    The group limits are given as a wrapper, or with ``by_settings`` as settings that
    ``build_graph`` turns into its default wrappers."""
    state = {"active": 0, "peak": 0}
    release = asyncio.Event()

    @tool
    async def net(i: int) -> str:
        """Holds a network slot until released."""
        state["active"] += 1
        state["peak"] = max(state["peak"], state["active"])
        await release.wait()
        state["active"] -= 1
        return f"net {i}"

    @tool
    async def local() -> str:
        """A local tool in no group."""
        return "local done"

    run_settings = settings(group_limits=group_limits if by_settings else {}, max_concurrency=16)
    limits = group_limits_of(run_settings) if by_settings else GroupLimits(group_limits)
    graph = build_graph(
        ScriptedModel(replies=replies),
        tools=[configure(net, concurrency_group="net"), local],
        checkpointer=InMemorySaver(),
        settings=run_settings,
        tool_wrappers=None if by_settings else [limits],
    )
    return graph, state, release, limits


async def test_group_limit_is_never_exceeded_while_another_group_runs_freely():
    net_calls = [("net", {"i": i}) for i in range(5)]
    graph, state, release, limits = crowd({"net": 2}, [calls(*net_calls, ("local", {})), Reply(text="ok")])
    events: list[AgentEvent] = []
    async with asyncio.timeout(GUARD_S):
        async for event in stream(graph, ask(), {"configurable": {"thread_id": "g"}}):
            events.append(event)
            if event.type == "tool_complete" and event.name == "local":
                await until(lambda: state["active"] == 2 and limits.snapshot()["net"]["waiting"] == 3)
                assert limits.snapshot() == {"net": {"limit": 2, "running": 2, "waiting": 3}}
                assert len([e for e in events if e.type == "tool_start" and e.name == "net"]) <= 2
                release.set()

    assert release.is_set(), "the local tool finished only after the network calls"
    assert state["peak"] == 2
    assert len([e for e in events if e.type == "tool_complete"]) == 6
    assert limits.snapshot()["net"] == {"limit": 2, "running": 0, "waiting": 0}


async def collect(graph, thread: str) -> list[AgentEvent]:
    return [e async for e in stream(graph, ask(), {"configurable": {"thread_id": thread}})]


async def test_the_group_limit_is_shared_by_concurrent_runs():
    first_turns = [calls(("net", {"i": i})) for i in range(2)]
    graph, state, release, limits = crowd({"net": 1}, [*first_turns, Reply(text="ok"), Reply(text="ok")])

    async with asyncio.timeout(GUARD_S):
        runs = [asyncio.create_task(collect(graph, t)) for t in ("a", "b")]
        await until(lambda: state["active"] == 1 and limits.snapshot()["net"]["waiting"] == 1)
        assert limits.snapshot()["net"] == {"limit": 1, "running": 1, "waiting": 1}
        release.set()
        results = await asyncio.gather(*runs)
    assert state["peak"] == 1
    assert all(events[-1].status == "done" for events in results)


async def test_build_graph_applies_the_group_limits_of_its_settings_by_default():
    net_calls = [("net", {"i": i}) for i in range(3)]
    graph, state, release, limits = crowd(
        {"net": 1, "other": 2}, [calls(*net_calls), Reply(text="ok")], by_settings=True
    )
    async with asyncio.timeout(GUARD_S):
        run = asyncio.create_task(collect(graph, "defaults"))
        await until(lambda: state["active"] == 1 and limits.snapshot()["net"]["waiting"] == 2)
        assert limits.snapshot()["net"] == {"limit": 1, "running": 1, "waiting": 2}
        release.set()
        events = await run
    assert state["peak"] == 1 and events[-1].status == "done"


class SimulatedBackend:
    """A backend whose latency the test sets; calls admitted together end together.

    Each call reports progress once it is in, then waits for the current wave. The test
    releases a wave when every admitted call is in, advancing the fake clock by the latency,
    so each call's measured latency is exactly the backend's latency at that time.
    """

    def __init__(self, limits: Callable[[], dict[str, int]]) -> None:
        self.clock = FakeClock()
        self.latency = 0.1
        self.inside = 0
        self.wave = asyncio.Event()
        self.waves = 0
        self.snapshot = limits

    async def call(self) -> str:
        self.inside += 1
        progress.report(None, "in")
        await self.wave.wait()
        return "ok"

    def ready(self) -> bool:
        gate = self.snapshot()["db"]
        waiting_done = gate["waiting"] == 0 or gate["running"] >= gate["limit"]
        return self.inside > 0 and self.inside == gate["running"] and waiting_done

    def release(self) -> int:
        """End the current wave; returns its size."""
        size, self.inside = self.inside, 0
        self.clock.now += self.latency
        self.waves += 1
        wave, self.wave = self.wave, asyncio.Event()
        wave.set()
        return size


async def test_adaptive_limit_through_the_graph_follows_a_simulated_backend():
    clock = FakeClock()
    limits = GroupLimits({"db": 2}, adaptive=True, floor=1, ceiling=6, clock=clock)
    backend = SimulatedBackend(limits.snapshot)
    backend.clock = clock

    @tool
    async def query(i: int) -> str:
        """One call to the simulated backend."""
        return await backend.call()

    turns, per_turn = 10, 10
    model = ScriptedModel(
        replies=[calls(*[("query", {"i": i}) for i in range(per_turn)]) for _ in range(turns)]
        + [Reply(text="done")]
    )
    graph = build_graph(
        model,
        tools=[configure(query, concurrency_group="db")],
        checkpointer=InMemorySaver(),
        settings=settings(group_limits={}, max_concurrency=per_turn, max_steps=turns + 2),
        tool_wrappers=[limits],
    )
    phases = {"fast": 0.1, "slow": 0.6, "fast again": 0.1}
    limit_by_phase: dict[str, list[int]] = {name: [] for name in phases}

    def phase() -> str:
        return "fast" if backend.waves < 8 else "slow" if backend.waves < 20 else "fast again"

    async with asyncio.timeout(GUARD_S):
        async for event in stream(graph, ask(), {"configurable": {"thread_id": "adaptive"}}):
            if event.type in ("tool_progress", "tool_complete") and backend.ready():
                name = phase()
                backend.latency = phases[name]
                backend.release()
                limit_by_phase[name].append(limits.limits()["db"])

    fast, slow, again = (limit_by_phase[name] for name in phases)
    assert len(fast) == 8 and len(slow) == 12 and len(again) >= 4, limit_by_phase
    assert max(fast) == 6, f"rises to the ceiling while latency holds: {limit_by_phase}"
    assert min(slow) <= 2, f"falls when the backend slows down: {limit_by_phase}"
    assert max(again) > min(slow), f"rises again when it is fast again: {limit_by_phase}"
