"""Prometheus metrics of the runs, read off the same ``AgentEvent``s every consumer sees.

Each app has its own ``CollectorRegistry`` (so several apps in one process, as in tests, do not
collide). ``GET /metrics`` renders it in the Prometheus text format.

Other parts of the agent add their own numbers by registering a collector on the same registry,
either when the app is made or later::

    create_app(collectors=[cache_collector])            # e.g. tool cache hits
    app.state.metrics.registry.register(limits_collector)  # e.g. current concurrency limits

A collector is any object with ``collect()`` yielding ``prometheus_client`` metric families
(see ``prometheus_client.registry.Collector``); it is read at every scrape, so it reports
live values without pushing them here. A collector that needs async I/O (the tool engine's
stats live in an async store) is made by the route from what it awaited, and passed to
``render`` for that one scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent_ng.contract import AgentEvent, EventType
from agent_ng.engine.concurrency import GroupLimits

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The run counters; ``observe`` each event of a run, ``cancelled`` when one is cut off."""

    def __init__(self, collectors: Iterable[Collector] = ()) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("agent_runs", "Runs by how they ended.", ["status"], registry=r)
        self.runs_active = Gauge("agent_runs_active", "Runs streaming now.", registry=r)
        self.runs_waiting = Gauge(
            "agent_runs_waiting", "Runs waiting for another run on their thread to end.", registry=r
        )
        self.runs_rejected = Counter(
            "agent_runs_rejected", "Streamed runs refused with 503: the replica ran AGENT_MAX_RUNS runs.", registry=r
        )
        self.run_takeovers = Counter(
            "agent_run_takeovers", "Runs this replica took over from a replica that died, froze or let them go.",
            registry=r,
        )
        self.run_seconds = Histogram(
            "agent_run_duration_seconds", "Run wall time.", buckets=DURATION_BUCKETS, registry=r
        )
        self.first_token_seconds = Histogram(
            "agent_first_token_seconds",
            "Time from run start to the model's first text chunk.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("agent_tokens", "Model tokens.", ["kind"], registry=r)
        self.tool_calls = Counter(
            "agent_tool_calls", "Tool calls by tool and outcome.", ["tool", "outcome"], registry=r
        )
        self.tool_seconds = Histogram(
            "agent_tool_duration_seconds",
            "Tool call wall time.",
            ["tool"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        for collector in collectors:
            r.register(collector)

    def observe(self, event: AgentEvent, *, first_content: bool = False) -> None:
        """Count what one event of a run tells: its first text, a tool's end, the run's end."""
        if event.type == EventType.CONTENT:
            if first_content:
                self.first_token_seconds.observe(event.t)
        elif event.type in (EventType.TOOL_COMPLETE, EventType.TOOL_ERROR):
            outcome = "ok" if event.type == EventType.TOOL_COMPLETE else "error"
            self.tool_calls.labels(event.name or "?", outcome).inc()
            self.tool_seconds.labels(event.name or "?").observe(event.elapsed_s or 0.0)
        elif event.type == EventType.RUN_END:
            self.runs.labels(event.status or "done").inc()
            self.run_seconds.observe(event.t)
            for kind in ("input", "output"):
                self.tokens.labels(kind).inc((event.usage or {}).get(f"{kind}_tokens", 0))

    def cancelled(self, t: float) -> None:
        self.runs.labels("cancelled").inc()
        self.run_seconds.observe(t)

    def render(self, *scraped: Collector) -> bytes:
        """The registry's metrics, then those of the ``scraped`` collectors (this scrape only)."""
        once = CollectorRegistry(auto_describe=False)
        for collector in scraped:
            once.register(collector)
        return generate_latest(self.registry) + generate_latest(once)


class GroupLimitsCollector:
    """Each concurrency group's current limit (it moves when adaptive), calls running, calls waiting."""

    def __init__(self, limits: GroupLimits | None) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Metric]:
        snapshot = self.limits.snapshot() if self.limits else {}
        for field, what in GROUP_GAUGES:
            family = GaugeMetricFamily(f"agent_ng_group_{field}", what, labels=["group"])
            for group, figures in snapshot.items():
                family.add_metric([group], figures[field])
            yield family


GROUP_GAUGES = [
    ("limit", "Concurrency limit of the group now"),
    ("running", "Tool calls of the group running now"),
    ("waiting", "Tool calls waiting for a slot in the group"),
]


class RunQueueCollector:
    """The run queue at this scrape: runs waiting to start (on this process, or in the run table
    every replica claims from) and runs this replica holds."""

    def __init__(self, queued: int, held: int) -> None:
        self.queued, self.held = queued, held

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("agent_runs_queued", "Runs waiting for a replica with room.", value=self.queued)
        yield GaugeMetricFamily("agent_runs_held", "Runs this replica has started and not ended.", value=self.held)
