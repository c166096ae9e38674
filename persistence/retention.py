"""Bounded checkpoint storage: keep the last K checkpoints per thread, delete threads idle past a TTL.

LangGraph writes a checkpoint per superstep and keeps them all; SQLite stores each with the
whole state, so a thread's storage grows with the square of its length. ``prune`` applies a
``Retention`` to a SQLite or PostgreSQL saver:

    report = await prune(saver, Retention(keep_checkpoints=20, thread_ttl_s=30 * 86400))

``open_checkpointer`` applies it in the background (``retain``): each thread is pruned after
each run on it ends, and idle threads are deleted every ``interval_s``; ``agent-ng prune``
runs it on every thread by hand. What a thread needs stays intact:

- the newest ``keep_checkpoints`` of each namespace, so the latest one loads and resumes, with
  their pending writes (only the writes of deleted checkpoints go);
- the oldest kept checkpoint loses its parent link (its parent is gone), like LangGraph's own
  ``keep_latest`` prune;
- PostgreSQL's ``checkpoint_blobs`` are shared by version between checkpoints: only versions that
  a deleted checkpoint used and no kept one does are deleted.

Each thread is pruned in its own transaction. That needs no thread lock, so it never refuses a
run: a run only adds newer checkpoints and writes to its latest one, which are kept. An idle
thread is deleted under its lock (``agent_ng.persistence.thread_lock``), and only if it is still idle then. Idleness is read from checkpoint ids (uuid6: time-ordered), so no clock column is
needed. This graph has no ``DeltaChannel`` (whose values live in older checkpoints' writes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from uuid import UUID

from langgraph.checkpoint.base import BaseCheckpointSaver

from agent_ng.persistence.pg_checkpoints import delete_checkpoints
from agent_ng.persistence.thread_lock import ThreadBusyError, locks_of

log = logging.getLogger(__name__)

UUID_EPOCH_OFFSET = 0x01B21DD213814000
"""100-ns intervals from the UUID epoch (1582-10-15) to the Unix epoch: uuid6's time base."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What ``prune`` keeps, and how often ``retain`` runs it; 0 turns either limit off."""

    keep_checkpoints: int = 20
    """Newest checkpoints kept per thread (and namespace); 0 keeps all."""
    thread_ttl_s: float = 0
    """Threads with no checkpoint for this long are deleted; 0 keeps them."""
    interval_s: float = 300
    """Seconds between two background passes."""

    @property
    def enabled(self) -> bool:
        return self.keep_checkpoints > 0 or self.thread_ttl_s > 0

    @classmethod
    def from_settings(cls, settings: Any) -> Retention:
        return cls(
            settings.retention_keep_checkpoints,
            settings.retention_thread_ttl_s,
            settings.retention_interval_s,
        )


@dataclass(slots=True)
class PruneReport:
    """What one ``prune`` pass did; ``summary`` is the line ``agent-ng prune`` prints."""

    checkpoints_deleted: int = 0
    threads_pruned: list[str] = field(default_factory=list)
    threads_deleted: list[str] = field(default_factory=list)
    threads_busy: list[str] = field(default_factory=list)
    """Skipped because a run held them; a later pass takes them."""

    def summary(self) -> str:
        return (
            f"deleted {self.checkpoints_deleted} checkpoints of {len(self.threads_pruned)} threads, "
            f"{len(self.threads_deleted)} idle threads; skipped {len(self.threads_busy)} busy threads"
        )


class Store(Protocol):
    """The queries ``prune`` runs on one kind of checkpointer's tables (``SqliteStore``, ``PostgresStore``)."""

    async def overfull(self, keep: int) -> list[str]: ...
    async def idle(self, before_id: str) -> list[str]: ...
    async def last_id(self, thread_id: str) -> str | None: ...
    async def prune_thread(self, thread_id: str, keep: int) -> int: ...


def checkpoint_id_at(unix_s: float) -> str:
    """The smallest uuid6 of that instant: checkpoint ids compare as strings in time order."""
    timestamp = int(unix_s * 1e7) + UUID_EPOCH_OFFSET
    value = ((timestamp >> 12) & 0xFFFFFFFFFFFF) << 80 | (timestamp & 0x0FFF) << 64
    return str(UUID(int=value | 0x6 << 76))


def split_kept(rows: Sequence[tuple[str, str, str | None]], keep: int) -> tuple[list, list]:
    """``(ns, id, parent)`` rows -> (kept rows, deleted rows): the newest ``keep`` of each ns."""
    by_ns: dict[str, list[tuple[str, str, str | None]]] = {}
    for row in rows:
        by_ns.setdefault(row[0], []).append(row)
    kept, deleted = [], []
    for ns_rows in by_ns.values():
        ns_rows.sort(key=lambda r: r[1], reverse=True)
        kept += ns_rows[:keep]
        deleted += ns_rows[keep:]
    return kept, deleted


def orphans(kept: list, deleted: list) -> list[tuple[str, str]]:
    """Kept ``(ns, id)`` whose parent is deleted: their parent link goes."""
    gone = {(ns, cid) for ns, cid, _ in deleted}
    return [(ns, cid) for ns, cid, parent in kept if (ns, parent) in gone]


class SqliteStore:
    """Prunes on the saver's connection, under its lock, one ``BEGIN IMMEDIATE`` per thread."""

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    async def _rows(self, query: str, params: tuple) -> list[tuple]:
        async with self.saver.lock, self.saver.conn.execute(query, params) as cursor:
            return list(await cursor.fetchall())

    async def overfull(self, keep: int) -> list[str]:
        rows = await self._rows(
            "SELECT DISTINCT thread_id FROM checkpoints GROUP BY thread_id, checkpoint_ns "
            "HAVING count(*) > ?",
            (keep,),
        )
        return [r[0] for r in rows]

    async def idle(self, before_id: str) -> list[str]:
        rows = await self._rows(
            "SELECT thread_id FROM checkpoints GROUP BY thread_id HAVING max(checkpoint_id) < ?",
            (before_id,),
        )
        return [r[0] for r in rows]

    async def last_id(self, thread_id: str) -> str | None:
        rows = await self._rows("SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = ?", (thread_id,))
        return rows[0][0]

    async def prune_thread(self, thread_id: str, keep: int) -> int:
        """A thread within ``keep`` (most, after most runs) costs one read; only one with
        checkpoints to delete takes the database's write lock."""
        conn = self.saver.conn
        async with self.saver.lock:
            over = await conn.execute_fetchall(
                "SELECT 1 FROM checkpoints WHERE thread_id = ? GROUP BY checkpoint_ns HAVING count(*) > ? LIMIT 1",
                (thread_id, keep),
            )
            if not over:
                return 0
            try:
                await conn.execute("BEGIN IMMEDIATE")  # in the try: a cancelled wait for it rolls it back once it comes
                async with conn.execute(
                    "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id FROM checkpoints "
                    "WHERE thread_id = ?",
                    (thread_id,),
                ) as cursor:
                    kept, deleted = split_kept(list(await cursor.fetchall()), keep)
                gone = [(thread_id, ns, cid) for ns, cid, _ in deleted]
                await conn.executemany(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", gone
                )
                await conn.executemany(
                    "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                    gone,
                )
                await conn.executemany(
                    "UPDATE checkpoints SET parent_checkpoint_id = NULL "
                    "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                    [(thread_id, ns, cid) for ns, cid in orphans(kept, deleted)],
                )
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()
        return len(deleted)


class PostgresStore:
    """Prunes on a pool connection, one transaction per thread; blobs by reference."""

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    async def _rows(self, query: str, params: tuple) -> list[dict]:
        async with self.saver.conn.connection() as conn:
            return await (await conn.execute(query, params, prepare=False)).fetchall()

    async def overfull(self, keep: int) -> list[str]:
        rows = await self._rows(
            "SELECT DISTINCT thread_id FROM checkpoints GROUP BY thread_id, checkpoint_ns "
            "HAVING count(*) > %s",
            (keep,),
        )
        return [r["thread_id"] for r in rows]

    async def idle(self, before_id: str) -> list[str]:
        rows = await self._rows(
            "SELECT thread_id FROM checkpoints GROUP BY thread_id HAVING max(checkpoint_id) < %s",
            (before_id,),
        )
        return [r["thread_id"] for r in rows]

    async def last_id(self, thread_id: str) -> str | None:
        rows = await self._rows(
            "SELECT max(checkpoint_id) AS last FROM checkpoints WHERE thread_id = %s", (thread_id,)
        )
        return rows[0]["last"]

    async def prune_thread(self, thread_id: str, keep: int) -> int:
        async with self.saver.conn.connection() as conn, conn.transaction(), conn.cursor() as cur:
            async def run(query: str, params: tuple) -> list[dict]:
                await cur.execute(query, params, prepare=False)
                return await cur.fetchall() if cur.description else []

            rows = await run(
                "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id FROM checkpoints "
                "WHERE thread_id = %s FOR UPDATE",
                (thread_id,),
            )
            kept, deleted = split_kept(
                [(r["checkpoint_ns"], r["checkpoint_id"], r["parent_checkpoint_id"]) for r in rows], keep
            )
            for ns in {ns for ns, _, _ in deleted}:
                await delete_checkpoints(run, thread_id, ns, [cid for n, cid, _ in deleted if n == ns])
                await run(
                    "UPDATE checkpoints SET parent_checkpoint_id = NULL WHERE thread_id = %s "
                    "AND checkpoint_ns = %s AND checkpoint_id = ANY(%s)",
                    (thread_id, ns, [cid for n, cid in orphans(kept, deleted) if n == ns]),
                )
        return len(deleted)


def store_of(saver: BaseCheckpointSaver) -> Store:
    """The ``Store`` for ``saver``'s tables; only the SQLite and PostgreSQL savers have tables to prune."""
    names = {cls.__name__ for cls in type(saver).__mro__}
    if "AsyncSqliteSaver" in names:
        return SqliteStore(saver)
    if "AsyncPostgresSaver" in names:
        return PostgresStore(saver)
    raise ValueError(
        f"retention works on the SQLite and PostgreSQL checkpointers, not {type(saver).__name__} "
        "(memory:// lives and dies with the process)"
    )


async def prune(
    saver: BaseCheckpointSaver,
    retention: Retention,
    *,
    threads: Sequence[str] | None = None,
    now: float | None = None,
    stop: asyncio.Event | None = None,
) -> PruneReport:
    """Apply ``retention`` to every thread of ``saver`` (or to ``threads``); ``stop`` ends the
    pass between threads."""
    store = store_of(saver)
    report = PruneReport()

    def chosen(ids: list[str]) -> list[str]:
        return ids if threads is None else [t for t in ids if t in set(threads)]

    if retention.thread_ttl_s > 0:
        before = checkpoint_id_at((time.time() if now is None else now) - retention.thread_ttl_s)
        for thread_id in chosen(await store.idle(before)):
            if stop is not None and stop.is_set():
                return report
            if await delete_if_idle(saver, store, thread_id, before):
                report.threads_deleted.append(thread_id)
            else:
                report.threads_busy.append(thread_id)
    if retention.keep_checkpoints > 0:
        for thread_id in chosen(await store.overfull(retention.keep_checkpoints)):
            if stop is not None and stop.is_set():
                return report
            report.checkpoints_deleted += await store.prune_thread(thread_id, retention.keep_checkpoints)
            report.threads_pruned.append(thread_id)
    return report


async def delete_if_idle(saver: BaseCheckpointSaver, store: Store, thread_id: str, before: str) -> bool:
    """Delete the thread under its lock if it is still idle; False if a run holds it.

    The lock matters here: a run starting on a thread being deleted would write a checkpoint
    on top of state that is gone. Pruning old checkpoints needs no lock: a run only adds newer
    checkpoints and writes to its latest one, which are kept."""
    try:
        async with locks_of(saver).hold(thread_id):
            last = await store.last_id(thread_id)
            if last is not None and last < before:
                await saver.adelete_thread(thread_id)
        return True
    except ThreadBusyError:
        return False


@asynccontextmanager
async def retain(saver: BaseCheckpointSaver, retention: Retention) -> AsyncIterator[None]:
    """Apply ``retention`` in the background while the block runs.

    - After each run (each release of a thread's lock, ``agent_ng.persistence.thread_lock``) its thread is
      pruned to ``keep_checkpoints``, by one background task; runs ending meanwhile are coalesced.
      The run's caller never waits for it.
    - With a ``thread_ttl_s``, idle threads are deleted at once and then every ``interval_s``.

    Closing finishes the threads queued so far (a short CLI run is pruned before the process
    ends), then stops. A failed prune is logged; the next run's prune or pass tries again.
    """
    if not retention.enabled:
        yield
        return
    store = store_of(saver)
    locks = locks_of(saver)
    queued: dict[str, None] = {}
    wake, stop = asyncio.Event(), asyncio.Event()

    def ended(thread_id: str) -> None:
        queued[thread_id] = None
        wake.set()

    async def prune_ended() -> None:
        while not (stop.is_set() and not queued):
            await wake.wait()
            wake.clear()
            while queued:
                thread_id = next(iter(queued))
                del queued[thread_id]
                try:
                    await store.prune_thread(thread_id, retention.keep_checkpoints)
                except Exception:
                    log.exception("retention: pruning thread %r failed", thread_id)

    async def expire_idle() -> None:
        while not stop.is_set():
            try:
                report = await prune(saver, replace(retention, keep_checkpoints=0), stop=stop)
                if report.threads_deleted:
                    log.info("retention: %s", report.summary())
            except Exception:
                log.exception("retention: deleting idle threads failed; next pass in %s s", retention.interval_s)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retention.interval_s)

    tasks = []
    if retention.keep_checkpoints > 0:
        locks.released.append(ended)
        tasks.append(asyncio.create_task(prune_ended(), name="retention: prune ended runs"))
    if retention.thread_ttl_s > 0:
        tasks.append(asyncio.create_task(expire_idle(), name="retention: delete idle threads"))
    try:
        yield
    finally:
        if ended in locks.released:
            locks.released.remove(ended)
        stop.set()
        wake.set()
        await asyncio.gather(*tasks)
