"""Deleting one run's checkpoints: what ``multitask_strategy="rollback"`` asks of a checkpointer.

LangGraph Server rolls a run back by cancelling it and calling the saver's
``adelete_for_runs([run_id])``; LangGraph's own savers leave it unimplemented (``langgraph dev``
then answers 500). ``open_checkpointer`` hands out savers that implement it, sync and async:
``RunDeletingMemorySaver``, ``RunDeletingSqliteSaver`` and, for PostgreSQL,
``agent_ng.persistence.pg_reconnect.ReconnectingPostgresSaver`` (through its retry and deadline)
over ``delete_postgres_runs``::

    await saver.adelete_for_runs([run_id])      # the thread is as it was before the run

A checkpoint is a run's when its metadata's ``run_id`` is the run's: LangGraph copies the run
config's ``metadata`` into every checkpoint it writes, settling included, and LangGraph Server
(``langgraph dev``, ``/langgraph``) puts the run's id there. What goes, in one transaction:

- every checkpoint of the runs, in every namespace, with its pending writes;
- PostgreSQL's blobs (and the memory saver's) of the channel versions only those checkpoints
  used; versions a kept checkpoint shares stay.

What stays: checkpoints without a run id (``agent-ng ask``, the native routes, thread records of
``agent_ng.persistence.thread_records``, and what a run settled of an earlier run's unfinished
step before it started, ``agent_ng.graph.events.earlier_runs``), and writes a run made on a checkpoint older than
its own: a run that went on from a pending step (a resume, ``input=None``) stores that step's
results on the checkpoint it started from, among that checkpoint's other writes, which no run id
tells apart (LangGraph Server's own in-memory runtime keeps them too).

Nothing is deleted (``RunDeletionRefusedError``) when deleting would not leave the thread as it
was before the run: when retention (``agent_ng.persistence.retention``) has pruned the checkpoint
the run started from (a run that wrote ``keep_checkpoints`` or more), the thread would be left
without its earlier state; when another run's checkpoint was made on top of one of the run's, it
would be left standing on nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agent_ng.persistence.pg_checkpoints import delete_checkpoints


class RunDeletionRefusedError(RuntimeError):
    """Deleting the runs' checkpoints would not leave their thread as it was before them; nothing
    was deleted. The message is one line naming the run, the thread and why."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored checkpoint, as the deletion plan reads it."""

    thread_id: str
    ns: str
    id: str
    parent: str | None
    run_id: str | None = None
    step: int | None = None


def doomed(rows: Iterable[Stored], run_ids: Sequence[str]) -> list[Stored]:
    """The checkpoints of ``run_ids`` among ``rows`` (every checkpoint of their threads), or
    ``RunDeletionRefusedError`` when deleting them would not restore their threads."""
    rows = list(rows)
    wanted = set(run_ids)
    gone = [r for r in rows if r.run_id in wanted]
    keys = {(r.thread_id, r.ns, r.id) for r in gone}
    present = {(r.thread_id, r.ns, r.id) for r in rows}
    for r in gone:
        if r.parent is not None and (r.thread_id, r.ns, r.parent) in keys:
            continue
        started_there = r.parent is not None and (r.thread_id, r.ns, r.parent) in present
        if not started_there and not (r.parent is None and r.step == -1):
            raise RunDeletionRefusedError(
                f"run {r.run_id} was not rolled back: retention has pruned the checkpoints thread "
                f"{r.thread_id!r} had before it (it keeps AGENT_RETENTION_KEEP_CHECKPOINTS per thread)"
            )
    for r in rows:
        if r.run_id not in wanted and r.parent is not None and (r.thread_id, r.ns, r.parent) in keys:
            below = next(g for g in gone if (g.thread_id, g.ns, g.id) == (r.thread_id, r.ns, r.parent))
            raise RunDeletionRefusedError(
                f"run {below.run_id} was not rolled back: checkpoint {r.id} of thread {r.thread_id!r} "
                f"(run {r.run_id}) was made on top of it"
            )
    return gone


def blocking(saver: Any, work: Callable[[], Awaitable[None]]) -> None:
    """Run an async saver's ``work`` from another thread, as its own sync methods do (from its
    loop's thread that would deadlock)."""
    try:
        if asyncio.get_running_loop() is saver.loop:
            raise asyncio.InvalidStateError(
                f"synchronous calls to {type(saver).__name__} are only allowed from another thread "
                "than its event loop's: use adelete_for_runs there"
            )
    except RuntimeError:
        pass
    asyncio.run_coroutine_threadsafe(work(), saver.loop).result()


class RunDeletingMemorySaver(InMemorySaver):
    """``InMemorySaver`` that deletes runs' checkpoints (``memory://``)."""

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_ids = [str(r) for r in run_ids]
        rows = []
        for thread_id, namespaces in self.storage.items():
            for ns, checkpoints in namespaces.items():
                for cid, (_, metadata, parent) in checkpoints.items():
                    meta = self.serde.loads_typed(metadata)
                    rows.append(Stored(thread_id, ns, cid, parent, meta.get("run_id"), meta.get("step")))
        gone = doomed(rows, run_ids)
        freed: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for r in gone:
            checkpoint = self.serde.loads_typed(self.storage[r.thread_id][r.ns].pop(r.id)[0])
            freed.setdefault((r.thread_id, r.ns), set()).update(checkpoint["channel_versions"].items())
            self.writes.pop((r.thread_id, r.ns, r.id), None)
        for (thread_id, ns), used in freed.items():
            kept = self.storage[thread_id][ns]
            for saved, _, _ in kept.values():
                used -= set(self.serde.loads_typed(saved)["channel_versions"].items())
            for channel, version in used:
                self.blobs.pop((thread_id, ns, channel, version), None)
            if not kept:
                del self.storage[thread_id][ns]
            if not self.storage[thread_id]:
                del self.storage[thread_id]

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.delete_for_runs(run_ids)


class RunDeletingSqliteSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` that deletes runs' checkpoints, on its connection, under its lock, in
    one ``BEGIN IMMEDIATE`` (retention's prune waits for it, and it for a prune)."""

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_ids = [str(r) for r in run_ids]
        if not run_ids:
            return
        await self.setup()
        run_of = "json_extract(CAST(metadata AS TEXT), '$.run_id')"
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                async with self.conn.execute(
                    f"SELECT DISTINCT thread_id FROM checkpoints WHERE {run_of} IN ({marks(run_ids)})", run_ids
                ) as cursor:
                    threads = [row[0] for row in await cursor.fetchall()]
                async with self.conn.execute(
                    "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                    f"{run_of}, json_extract(CAST(metadata AS TEXT), '$.step') FROM checkpoints "
                    f"WHERE thread_id IN ({marks(threads)})",
                    threads,
                ) as cursor:
                    gone = doomed([Stored(*row) for row in await cursor.fetchall()], run_ids)
                keys = [(r.thread_id, r.ns, r.id) for r in gone]
                await self.conn.executemany(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", keys
                )
                await self.conn.executemany(
                    "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", keys
                )
            except BaseException:
                await self.conn.rollback()
                raise
            await self.conn.commit()

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        blocking(self, lambda: self.adelete_for_runs(run_ids))


def marks(values: Sequence[Any]) -> str:
    """SQLite's placeholders for ``values`` in ``IN (...)``."""
    return ",".join("?" * len(values))


async def delete_postgres_runs(saver: Any, run_ids: Sequence[str]) -> None:
    """Delete the runs' checkpoints from an ``AsyncPostgresSaver``'s tables (``saver.conn``: its
    pool), in one transaction that locks their threads' checkpoints as retention's prune does."""
    run_ids = [str(r) for r in run_ids]
    async with saver.conn.connection() as conn, conn.transaction(), conn.cursor() as cur:

        async def run(query: str, params: tuple) -> list[dict]:
            await cur.execute(query, params, prepare=False)
            return await cur.fetchall() if cur.description else []

        threads = [r["thread_id"] for r in await run(
            "SELECT DISTINCT thread_id FROM checkpoints WHERE metadata ->> 'run_id' = ANY(%s)", (run_ids,)
        )]
        if not threads:
            return
        rows = await run(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, metadata ->> 'run_id' AS run_id, "
            "metadata -> 'step' AS step FROM checkpoints WHERE thread_id = ANY(%s) FOR UPDATE",
            (threads,),
        )
        gone = doomed(
            [Stored(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"], r["parent_checkpoint_id"],
                    r["run_id"], r["step"]) for r in rows],
            run_ids,
        )
        for thread_id, ns in sorted({(r.thread_id, r.ns) for r in gone}):
            await delete_checkpoints(run, thread_id, ns, [r.id for r in gone if (r.thread_id, r.ns) == (thread_id, ns)])
