"""What the tool engine keeps beyond one call: cached results, recent durations, counters.

Chosen by one URL (``AGENT_CACHE_URL``, opened by ``agent_ng.engine.stores``), like the
checkpointer: ``memory://`` keeps it in the process (``build_graph``'s default when given no store), ``sqlite:///path.db`` in a file
beside the checkpoints (the default URL: survives restarts, and WAL mode lets the processes of
one machine share it), ``redis://host:6379/0`` in Redis when replicas share it.

Finished tool results are also kept by call (``agent_ng.engine.recorded_results``), so a call that a
resumed run would repeat is answered with the result it already had; they expire after
``RESULTS_KEPT_S`` (a run is resumed within days or not at all) and the in-memory store keeps
at most ``max_entries`` of them.

The cache is bounded: past ``max_entries`` the oldest entries are evicted. Durations are kept
per tool for its last ``durations_kept`` successful runs (the ETA and the quantiles read
them); counters are kept forever.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Outcome = Literal["ok", "error", "timeout", "cached"]
Content = str | list[Any]
"""A ``ToolMessage``'s content: text, or a list of content blocks."""

DURATIONS_KEPT = 1000
RESULTS_KEPT_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A cached tool result and when it expires."""

    content: Content
    expires_at: float


@dataclass(frozen=True, slots=True)
class ToolCounts:
    """One tool's record: every call is one of ok, error, timeout (cache hits are ok calls)."""

    tool: str
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    cache_hits: int = 0
    durations: tuple[float, ...] = ()
    """Seconds taken by the most recent successful runs, newest first."""


class ToolStore(Protocol):
    """What the engine keeps beyond one call, whichever the store (memory, SQLite, Redis)."""

    async def cached(self, key: str, now: float) -> CachedResult | None:
        """The result stored under ``key`` unless it expired by ``now``."""

    async def cache(self, key: str, content: Content, now: float, ttl_s: float) -> None:
        """Store a result until ``now + ttl_s``, evicting the oldest past the size bound."""

    async def record(self, tool: str, outcome: Outcome, duration_s: float | None) -> None:
        """Count one call; a duration is kept for ``ok`` runs that really ran."""

    async def durations(self, tool: str, limit: int) -> list[float]:
        """The tool's most recent successful run durations, newest first."""

    async def counts(self) -> list[ToolCounts]:
        """Every tool's record, by name."""

    async def recorded_result(self, key: str, now: float) -> str | None:
        """The tool result recorded under ``key`` (a serialized ``ToolMessage``), if kept."""

    async def record_result(self, key: str, message: str, now: float) -> None:
        """Keep a finished call's result under ``key`` until ``now + RESULTS_KEPT_S``; durable
        once this returns."""


def counter_increments(outcome: Outcome) -> dict[str, int]:
    """What one call adds to each counter."""
    return {
        "calls": 1,
        "errors": int(outcome == "error"),
        "timeouts": int(outcome == "timeout"),
        "cache_hits": int(outcome == "cached"),
    }


class MemoryToolStore:
    """The store in this process only: for tests and for graphs built without one."""

    def __init__(self, max_entries: int = 10_000, durations_kept: int = DURATIONS_KEPT) -> None:
        self.max_entries = max_entries
        self.durations_kept = durations_kept
        self._cache: OrderedDict[str, CachedResult] = OrderedDict()
        self._counts: dict[str, dict[str, int]] = {}
        self._durations: dict[str, deque[float]] = {}
        self._results: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def cached(self, key: str, now: float) -> CachedResult | None:
        entry = self._cache.get(key)
        return entry if entry is not None and entry.expires_at > now else None

    async def cache(self, key: str, content: Content, now: float, ttl_s: float) -> None:
        self._cache.pop(key, None)
        self._cache[key] = CachedResult(content, now + ttl_s)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def record(self, tool: str, outcome: Outcome, duration_s: float | None) -> None:
        increments = counter_increments(outcome)
        counts = self._counts.setdefault(tool, dict.fromkeys(increments, 0))
        for name, add in increments.items():
            counts[name] += add
        if outcome == "ok" and duration_s is not None:
            self._durations.setdefault(tool, deque(maxlen=self.durations_kept)).appendleft(
                duration_s
            )

    async def durations(self, tool: str, limit: int) -> list[float]:
        return list(self._durations.get(tool, ()))[:limit]

    async def recorded_result(self, key: str, now: float) -> str | None:
        message, expires_at = self._results.get(key, (None, 0.0))
        return message if expires_at > now else None

    async def record_result(self, key: str, message: str, now: float) -> None:
        self._results[key] = (message, now + RESULTS_KEPT_S)
        while len(self._results) > self.max_entries:
            self._results.popitem(last=False)

    async def counts(self) -> list[ToolCounts]:
        return [
            ToolCounts(tool, **counts, durations=tuple(self._durations.get(tool, ())))
            for tool, counts in sorted(self._counts.items())
        ]
