"""Concurrency groups: at most N calls of one ``concurrency_group`` run at once.

A tool's ``ToolSpec.concurrency_group`` (e.g. ``"network"``) puts it in a group; settings give
each group a limit (``AGENT_GROUP_LIMITS='{"network": 3}'``). Calls beyond the limit wait in
the ``GroupLimits`` wrapper, in arrival order, before ``lifecycle`` writes their
``tool_start``; tools of other groups, or of none, pass straight through and do not wait
behind them.

How it meets LangGraph's ``max_concurrency``: that one bounds all tool tasks of a step in
one run, and a call waiting here holds one of those slots. So with ``max_concurrency=3`` and
six network calls first in the step, a local tool asked for after them still waits for a
slot; give ``max_concurrency`` room above the group limits for that. The group limits are
per process and shared by every run and thread in it (one set of gates per configuration,
whichever event loop the run is on); replicas do not share them.

With ``AGENT_ADAPTIVE_CONCURRENCY=true`` each group's limit moves between
``AGENT_ADAPTIVE_FLOOR`` and ``AGENT_ADAPTIVE_CEILING``, starting at its configured value, by
``AdaptiveLimit`` (AIMD with a latency signal, after Netflix's concurrency-limits).

    graph = build_graph(tool_wrappers=[GroupLimits({"db": 2})])   # from settings by default (engine.chain)
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from time import monotonic

from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from agent_ng.engine.tool_calls import Execute
from agent_ng.tools.registry import spec_of

Clock = Callable[[], float]


@dataclass(eq=False, slots=True)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False


class Gate:
    """Lets at most ``limit`` holders in at once, first come first served; the limit may change.

    Thread-safe and bound to no event loop, so one gate serves runs on any loop of the process.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running = 0
        self._waiting: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def set_limit(self, limit: int) -> None:
        """Change the limit; lowering it lets holders finish and admits no one until below it."""
        with self._lock:
            self._limit = limit
            self._admit()

    async def acquire(self) -> None:
        with self._lock:
            if self._running < self._limit and not self._waiting:
                self._running += 1
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop, loop.create_future())
            self._waiting.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if waiter.granted:
                    self._running -= 1
                    self._admit()
                else:
                    self._waiting.remove(waiter)
            raise

    def release(self) -> None:
        with self._lock:
            self._running -= 1
            self._admit()

    def _admit(self) -> None:
        while self._waiting and self._running < self._limit:
            waiter = self._waiting.popleft()
            waiter.granted = True
            self._running += 1
            waiter.loop.call_soon_threadsafe(_wake, waiter.future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True)
class AdaptiveLimit:
    """A concurrency limit learnt from latency and errors: AIMD with a latency signal.

    Each finished call is a sample. An error or timeout, or a recent latency above
    ``tolerance`` x the long-run baseline, multiplies the limit by ``backoff``; a call that
    went well while the limit was in use (at least half of it in flight, as Netflix's AIMD
    checks) adds one. The baseline is a slow moving average, so a lasting change of the
    backend's speed becomes the new normal after a while. Cancelled calls are not samples.

        limit = AdaptiveLimit(initial=3, floor=1, ceiling=10, clock=fake_clock)
        started = limit.begin(); ...; limit.end(started, ok=True); limit.current
    """

    initial: int
    floor: int = 1
    ceiling: int = 16
    clock: Clock = monotonic
    backoff: float = 0.9
    tolerance: float = 1.5
    recent_weight: float = 0.5
    baseline_weight: float = 0.05
    value: float = field(init=False)
    in_flight: int = field(init=False, default=0)
    recent_s: float | None = field(init=False, default=None)
    baseline_s: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={self.floor}, ceiling={self.ceiling}")
        self.value = float(min(max(self.initial, self.floor), self.ceiling))

    @property
    def current(self) -> int:
        return int(self.value)

    def begin(self) -> float:
        """A call starts; returns its start time for ``end``."""
        self.in_flight += 1
        return self.clock()

    def end(self, started: float, *, ok: bool | None) -> None:
        """A call that began at ``started`` ended: ``ok`` True, False (error/timeout) or None (ignore)."""
        in_flight = self.in_flight
        self.in_flight -= 1
        if ok is None:
            return
        latency = self.clock() - started
        self.recent_s = _average(self.recent_s, latency, self.recent_weight)
        self.baseline_s = _average(self.baseline_s, latency, self.baseline_weight)
        if not ok or self.recent_s > self.tolerance * self.baseline_s:
            self.value = max(float(self.floor), self.value * self.backoff)
        elif in_flight * 2 >= self.value:
            self.value = min(float(self.ceiling), self.value + 1)


def _average(previous: float | None, sample: float, weight: float) -> float:
    return sample if previous is None else previous + weight * (sample - previous)


@dataclass(slots=True)
class Group:
    """One concurrency group: the gate its calls wait at, and the limit it learns when adaptive."""

    gate: Gate
    adaptive: AdaptiveLimit | None = None
    learning: threading.Lock = field(default_factory=threading.Lock)
    """Serialises ``adaptive`` updates from runs on other threads' event loops."""

    async def run(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        await self.gate.acquire()
        try:
            if self.adaptive is None:
                return await execute(request)
            return await self._measured(request, execute, self.adaptive)
        finally:
            self.gate.release()

    async def _measured(
        self, request: ToolCallRequest, execute: Execute, adaptive: AdaptiveLimit
    ) -> ToolMessage | Command:
        with self.learning:
            started = adaptive.begin()
        ok: bool | None = False
        try:
            result = await execute(request)
            ok = not (isinstance(result, ToolMessage) and result.status == "error")
            return result
        except asyncio.CancelledError:
            ok = None
            raise
        finally:
            with self.learning:
                adaptive.end(started, ok=ok)
                self.gate.set_limit(adaptive.current)


class GroupLimits:
    """The wrapper: one ``Gate`` per configured group, adaptive ones if asked for."""

    def __init__(
        self,
        limits: Mapping[str, int],
        *,
        adaptive: bool = False,
        floor: int = 1,
        ceiling: int = 16,
        clock: Clock = monotonic,
    ) -> None:
        self.groups: dict[str, Group] = {}
        for name, limit in limits.items():
            if limit < 1:
                raise ValueError(f"the limit of concurrency group {name!r} must be >= 1, got {limit}")
            learnt = (
                AdaptiveLimit(limit, floor, max(ceiling, limit), clock) if adaptive else None
            )
            self.groups[name] = Group(Gate(learnt.current if learnt else limit), learnt)

    async def __call__(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        group = self.groups.get(spec_of(request.tool).concurrency_group or "")
        if group is None:
            return await execute(request)
        return await group.run(request, execute)

    def limits(self) -> dict[str, int]:
        """Each group's limit now (moves when adaptive), e.g. for metrics."""
        return {name: group.gate.limit for name, group in self.groups.items()}

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Each group's limit, calls running and calls waiting."""
        return {
            name: {"limit": g.gate.limit, "running": g.gate.running, "waiting": g.gate.waiting}
            for name, g in self.groups.items()
        }


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Group limits as a value: ``shared_group_limits`` keeps one ``GroupLimits`` per config."""

    limits: tuple[tuple[str, int], ...]
    adaptive: bool = False
    floor: int = 1
    ceiling: int = 16


@cache
def shared_group_limits(config: GroupConfig) -> GroupLimits:
    """The process's ``GroupLimits`` for ``config``: every graph built with it shares the gates."""
    return GroupLimits(
        dict(config.limits), adaptive=config.adaptive, floor=config.floor, ceiling=config.ceiling
    )
