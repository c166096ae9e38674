"""Tool analytics: per tool, calls, errors, timeouts, cache hits and p50/p95/max duration.

    record_outcomes(store)                # the wrapper (its place: ``agent_ng.engine.chain``)
    stats = await tool_stats(store)       # what ``agent-ng stats`` prints
    prometheus_text(stats)                # the same for a /metrics endpoint

The wrapper reads how each call ended from the notes the inner wrappers leave on its
``ToolMessage`` (``cached``, ``timed_out``, ``elapsed_s``), so the durations are the tools'
own run times, not time spent waiting for a slot. Each call is exactly one of ok, error or
timeout; a cache hit is an ok call that did not run. Quantiles come from an HdrHistogram
(3 significant digits) over the last ``DURATIONS_KEPT`` successful runs of each tool; the
counters cover all time. A store failure is logged and the call's result goes through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram
from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent_ng.engine.store import Outcome, ToolCounts, ToolStore
from agent_ng.engine.tool_calls import Execute, ToolCallWrapper, notes

log = logging.getLogger(__name__)

MICROS = 1_000_000
LONGEST_US = 24 * 3600 * MICROS
"""Longest duration the histogram tells apart (a day); longer ones count as this."""


def outcome_of(result: ToolMessage | Command) -> Outcome:
    """How a call ended, from its status and the notes the inner wrappers left on it."""
    noted = notes(result)
    if noted.get("cached"):
        return "cached"
    if noted.get("timed_out"):
        return "timeout"
    if isinstance(result, ToolMessage) and result.status == "error":
        return "error"
    return "ok"


def record_outcomes(store: ToolStore) -> ToolCallWrapper:
    """Count each call of a known tool by how it ended, and keep its run time."""

    async def record(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        result = await execute(request)
        if request.tool is not None:
            name = request.tool_call["name"]
            try:
                await store.record(name, outcome_of(result), notes(result).get("elapsed_s"))
            except Exception:
                log.warning("recording %s's outcome failed", name, exc_info=True)
        return result

    return record


@dataclass(frozen=True, slots=True)
class ToolStats:
    """One tool's counters and duration quantiles, as ``agent-ng stats`` and ``/metrics`` show them."""

    tool: str
    calls: int
    errors: int
    timeouts: int
    cache_hits: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None


def summarize(counts: ToolCounts) -> ToolStats:
    """The stats of one stored record: its quantiles from the kept durations (an HDR histogram)."""
    quantiles: tuple[float | None, ...] = (None, None, None)
    if counts.durations:
        histogram = HdrHistogram(1, LONGEST_US, 3)
        for seconds in counts.durations:
            histogram.record_value(min(max(round(seconds * MICROS), 1), LONGEST_US))
        quantiles = tuple(
            v / MICROS
            for v in (
                histogram.get_value_at_percentile(50),
                histogram.get_value_at_percentile(95),
                histogram.get_max_value(),
            )
        )
    return ToolStats(
        counts.tool, counts.calls, counts.errors, counts.timeouts, counts.cache_hits, *quantiles
    )


async def tool_stats(store: ToolStore) -> list[ToolStats]:
    """Summaries are made in a worker thread: the pure-Python histogram takes milliseconds per
    tool, which would stall a server's event loop (and the runs it streams)."""
    counts = await store.counts()
    return await asyncio.to_thread(lambda: [summarize(c) for c in counts])


COUNTERS = [
    ("calls", "Tool calls"),
    ("errors", "Tool calls that ended in an error"),
    ("timeouts", "Tool calls stopped by their timeout"),
    ("cache_hits", "Tool calls answered from the result cache"),
]


class ToolStatsCollector:
    """A Prometheus collector over a snapshot of the stats: counters per tool, and the
    duration quantiles as gauges (quantile 1 is the max)."""

    def __init__(self, stats: Iterable[ToolStats]) -> None:
        self.stats = list(stats)

    def collect(self) -> Iterator[Metric]:
        for field, what in COUNTERS:
            family = CounterMetricFamily(f"agent_ng_tool_{field}", what, labels=["tool"])
            for s in self.stats:
                family.add_metric([s.tool], getattr(s, field))
            yield family
        durations = GaugeMetricFamily(
            "agent_ng_tool_duration_seconds",
            "Duration of recent successful runs, by quantile (1 = max)",
            labels=["tool", "quantile"],
        )
        for s in self.stats:
            for quantile, value in [("0.5", s.p50_s), ("0.95", s.p95_s), ("1", s.max_s)]:
                if value is not None:
                    durations.add_metric([s.tool, quantile], value)
        yield durations


def prometheus_text(stats: Iterable[ToolStats]) -> str:
    """The stats in Prometheus' text format, e.g. for a ``/metrics`` endpoint."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ToolStatsCollector(stats))
    return generate_latest(registry).decode()
