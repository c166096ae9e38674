"""The tool store in a SQLite file (``sqlite:///path.db``), through aiosqlite.

One connection per store, its own thread, so no call blocks the event loop; autocommit, and
WAL mode with a busy timeout so several processes can read and write the same file. Cache
entries are evicted in insertion order, which SQLite's rowid already records.

Each statement is a round trip to the connection's thread, and parallel tools tend to start
and finish together, so calls recorded at the same moment share one write (group commit), their
counts as well as their results, and the recorded results asked for at the same moment (each
call asks once as it starts, ``agent_ng.engine.recorded_results``) share one ``SELECT``: 16
parallel calls cost a handful of round trips, not dozens. A result is durable once its
``record_result`` returns, as before: it returns when its batch is written.

Every cursor is closed on the connection's thread, never left to the garbage collector: that
would finalize it on the event loop's thread and reset its statement, which SQLite caches per
SQL text, while the connection's thread may be running the same statement for another call.
That write then failed (``InterfaceError: bad parameter or other API misuse``) and its calls
went uncounted: a few in every thousand under hundreds of parallel calls. ``_rows`` runs a
statement and reads its rows in one round trip, its cursor never leaving that thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from agent_ng.engine.store import (
    DURATIONS_KEPT,
    RESULTS_KEPT_S,
    CachedResult,
    Content,
    Outcome,
    ToolCounts,
    counter_increments,
)
from agent_ng.persistence.checkpoint import sqlite_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_cache (
    key TEXT PRIMARY KEY, content TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tool_cache_expiry ON tool_cache (expires_at);
CREATE TABLE IF NOT EXISTS tool_counts (
    tool TEXT PRIMARY KEY, calls INTEGER NOT NULL, errors INTEGER NOT NULL,
    timeouts INTEGER NOT NULL, cache_hits INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tool_durations (
    id INTEGER PRIMARY KEY, tool TEXT NOT NULL, seconds REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tool_durations_by_tool ON tool_durations (tool, id);
CREATE TABLE IF NOT EXISTS tool_results (
    key TEXT PRIMARY KEY, message TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tool_results_expiry ON tool_results (expires_at);
"""


PARAMETERS_PER_STATEMENT = 900
"""Under SQLite's 999, the lowest limit a build may have."""
RESULTS_PER_STATEMENT = PARAMETERS_PER_STATEMENT // 3
"""Rows of three values per ``INSERT`` of results."""


class SqliteToolStore:
    """The ``ToolStore`` in one SQLite file; ``open`` it from a ``sqlite:///`` URL."""

    def __init__(
        self, db: aiosqlite.Connection, max_entries: int, durations_kept: int = DURATIONS_KEPT
    ) -> None:
        self.db = db
        self.max_entries = max_entries
        self.durations_kept = durations_kept
        self._pending: list[tuple[str, Outcome, float | None]] = []
        self._batch: asyncio.Future[None] | None = None
        self._results: list[tuple[str, str, float]] = []
        self._results_batch: asyncio.Future[None] | None = None
        self._asked: set[str] = set()
        self._answers: asyncio.Future[dict[str, tuple[str, float]]] | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, max_entries: int, durations_kept: int = DURATIONS_KEPT
    ) -> AsyncIterator[SqliteToolStore]:
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(path, isolation_level=None) as db:
            store = cls(db, max_entries, durations_kept)
            for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL"):
                await store._run(f"PRAGMA {pragma}")
            async with db.executescript(SCHEMA):
                pass
            yield store

    async def _run(self, sql: str, parameters: tuple | dict = ()) -> None:
        """Run one statement and close its cursor (see the module docstring for why)."""
        async with self.db.execute(sql, parameters):
            pass

    async def _rows(self, sql: str, parameters: tuple | list = ()) -> list[tuple]:
        """Run one statement and read its rows, in one round trip to the connection's thread."""
        return list(await self.db.execute_fetchall(sql, parameters))

    async def _run_many(self, sql: str, parameters: list) -> None:
        """Run one statement for each of ``parameters`` and close its cursor."""
        async with self.db.executemany(sql, parameters):
            pass

    async def cached(self, key: str, now: float) -> CachedResult | None:
        rows = await self._rows(
            "SELECT content, expires_at FROM tool_cache WHERE key = ? AND expires_at > ?", (key, now)
        )
        return CachedResult(json.loads(rows[0][0]), rows[0][1]) if rows else None

    async def cache(self, key: str, content: Content, now: float, ttl_s: float) -> None:
        await self._run(
            "INSERT OR REPLACE INTO tool_cache (key, content, expires_at) VALUES (?, ?, ?)",
            (key, json.dumps(content), now + ttl_s),
        )
        await self._run(
            "DELETE FROM tool_cache WHERE expires_at <= ? OR rowid <= "
            "(SELECT rowid FROM tool_cache ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (now, self.max_entries),
        )

    async def record(self, tool: str, outcome: Outcome, duration_s: float | None) -> None:
        self._pending.append((tool, outcome, duration_s))
        if self._batch is None:
            self._batch = asyncio.ensure_future(self._write_pending())
        await asyncio.shield(self._batch)

    async def _write_pending(self) -> None:
        """Write every record made since the batch was scheduled, one statement kind at a time."""
        batch, self._pending, self._batch = self._pending, [], None
        await self._run_many(
            "INSERT INTO tool_counts (tool, calls, errors, timeouts, cache_hits) "
            "VALUES (:tool, :calls, :errors, :timeouts, :cache_hits) "
            "ON CONFLICT (tool) DO UPDATE SET calls = calls + :calls, "
            "errors = errors + :errors, timeouts = timeouts + :timeouts, "
            "cache_hits = cache_hits + :cache_hits",
            [{"tool": tool, **counter_increments(outcome)} for tool, outcome, _ in batch],
        )
        durations = [(t, d) for t, outcome, d in batch if outcome == "ok" and d is not None]
        if not durations:
            return
        await self._run_many("INSERT INTO tool_durations (tool, seconds) VALUES (?, ?)", durations)
        await self._run_many(
            "DELETE FROM tool_durations WHERE tool = ? AND id <= (SELECT id FROM tool_durations"
            " WHERE tool = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            [(tool, tool, self.durations_kept) for tool in {t for t, _ in durations}],
        )

    async def durations(self, tool: str, limit: int) -> list[float]:
        rows = await self._rows(
            "SELECT seconds FROM tool_durations WHERE tool = ? ORDER BY id DESC LIMIT ?", (tool, limit)
        )
        return [row[0] for row in rows]

    async def recorded_result(self, key: str, now: float) -> str | None:
        self._asked.add(key)
        if self._answers is None:
            self._answers = asyncio.ensure_future(self._read_results())
        message, expires_at = (await asyncio.shield(self._answers)).get(key, (None, 0.0))
        return message if expires_at > now else None

    async def _read_results(self) -> dict[str, tuple[str, float]]:
        """Every result asked for since the read was scheduled: key -> (message, expiry)."""
        keys, self._asked, self._answers = list(self._asked), set(), None
        found: dict[str, tuple[str, float]] = {}
        for start in range(0, len(keys), PARAMETERS_PER_STATEMENT):
            chunk = keys[start:start + PARAMETERS_PER_STATEMENT]
            rows = await self._rows(
                "SELECT key, message, expires_at FROM tool_results WHERE key IN "
                f"({', '.join(['?'] * len(chunk))})",
                chunk,
            )
            found.update((key, (message, expires_at)) for key, message, expires_at in rows)
        return found

    async def record_result(self, key: str, message: str, now: float) -> None:
        self._results.append((key, message, now))
        if self._results_batch is None:
            self._results_batch = asyncio.ensure_future(self._write_results())
        await asyncio.shield(self._results_batch)

    async def _write_results(self) -> None:
        """Write every result recorded since the batch was scheduled, in one statement (atomic
        in autocommit), and drop the expired ones."""
        batch, self._results, self._results_batch = self._results, [], None
        for start in range(0, len(batch), RESULTS_PER_STATEMENT):
            chunk = batch[start:start + RESULTS_PER_STATEMENT]
            await self._rows(
                "INSERT OR REPLACE INTO tool_results (key, message, expires_at) VALUES "
                + ", ".join(["(?, ?, ?)"] * len(chunk)),
                [value for key, message, now in chunk for value in (key, message, now + RESULTS_KEPT_S)],
            )
        await self._rows("DELETE FROM tool_results WHERE expires_at <= ?", (max(now for _, _, now in batch),))

    async def counts(self) -> list[ToolCounts]:
        rows = await self._rows("SELECT tool, calls, errors, timeouts, cache_hits FROM tool_counts ORDER BY tool")
        return [
            ToolCounts(*row, durations=tuple(await self.durations(row[0], self.durations_kept)))
            for row in rows
        ]
