"""The SQLite saver ``open_checkpointer`` hands out: parallel tasks' writes share one commit.

    async with SqliteSaver.from_conn_string("agent.db") as saver: ...

LangGraph stores each finished task's writes (``aput_writes``) the moment the task ends, so a
run killed mid-step resumes with only the tasks that had not finished. ``AsyncSqliteSaver``
makes that four round trips to the connection's thread per task (cursor, ``executemany``,
commit, closing the cursor), one task after another under the saver's lock: when 16 parallel
tools finish together, 64 thread hops on the event loop before the step can end.

Here the writes of every task that finished since the last commit go in one transaction: a
multi-row ``INSERT`` per kind of write (and per ``ROWS_PER_STATEMENT`` rows) and the commit, so
16 tools' results take one round trip. A kind's rows keep their order (a special write
replacing the task's earlier one, a regular one kept once), and one replacing write ahead of a
kept-once write of the same slot ends as it would in either order. Each ``aput_writes`` still
returns only once its own rows are committed, so what is durable when is unchanged; a batch
that fails is rolled back and fails each of its callers.

A checkpoint (``aput``) is stored as ``AsyncSqliteSaver`` stores it, in one round trip rather
than three: with durability ``sync`` each step's checkpoint is awaited before the next step
starts, so every hop saved is saved on every step of every run.

Both kinds of write take the database's write turn (``agent_ng.persistence.sqlite_turns``)
with the saver's lock, so processes sharing the file (``--workers``, replicas on one machine)
hand writing over at once rather than in SQLite's sleeping busy handler. The connection's
thread gives the turn back the moment its commit is done (``_commit``): handed back by the
writer's task instead, the turn stayed held while the event loop got round to it, a few ms
under load, and the other processes' writes queued behind it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)

from agent_ng.persistence.run_deletion import RunDeletingSqliteSaver
from agent_ng.persistence.sqlite_reads import OneTripReads
from agent_ng.persistence.sqlite_turns import WriteTurns

CHECKPOINT_COLUMNS = "(thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata)"
COLUMNS = "(thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value)"
ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
ROWS_PER_STATEMENT = 100
"""900 parameters: under SQLite's 999, the lowest limit a build may have."""
REPLACE, IGNORE = "INSERT OR REPLACE", "INSERT OR IGNORE"
"""``AsyncSqliteSaver``'s choice per call: writes to special channels (an interrupt, an error)
replace an earlier one of the task; other writes are kept once."""

Row = tuple[Any, ...]


class SqliteSaver(RunDeletingSqliteSaver):
    """``RunDeletingSqliteSaver`` whose ``aput_writes`` calls made together share one commit,
    whose ``aput`` takes a round trip less, whose loads take one or two
    (``agent_ng.persistence.sqlite_reads``), and whose writes take turns with other processes'
    (``write_turns``)."""

    def __init__(self, conn: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(OneTripReads(conn), *args, **kwargs)
        self._pending: list[tuple[RunnableConfig, Sequence[tuple[str, Any]], str, str]] = []
        self._batch: asyncio.Future[None] | None = None
        self.write_turns: WriteTurns | None = None
        """The database file's write turns across processes (``open_checkpointer`` sets them)."""

    def write_turn(self) -> AbstractAsyncContextManager[None]:
        """The database's write turn, when other processes may share the file."""
        return self.write_turns.turn() if self.write_turns is not None else nullcontext()

    async def _commit(self, statements: list[tuple[str, Sequence[Any]]]) -> None:
        """Under the saver's lock: take the write turn, then run ``statements`` and commit them
        (rolled back if one fails) in one trip to the connection's thread, which gives the turn
        back there and then. A stop while the trip is queued stops only the wait: the trip runs,
        and ends the turn."""
        turns = self.write_turns
        if turns is not None:
            await turns.take()
        started: list[bool] = []

        def run() -> None:
            started.append(True)
            connection = self.conn._conn  # aiosqlite's sqlite3 connection, used on its own thread
            try:
                for sql, parameters in statements:
                    connection.execute(sql, parameters)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            finally:
                if turns is not None:
                    turns.give_back()

        try:
            await self.conn._execute(run)  # aiosqlite's call on the connection's thread
        except asyncio.CancelledError:
            raise
        except BaseException:
            if turns is not None and not started:  # refused before it was queued (closed)
                turns.give_back()
            raise

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self.setup()
        c = config["configurable"]
        type_, serialized = self.serde.dumps_typed(checkpoint)
        serialized_metadata = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False).encode(
            "utf-8", "ignore"
        )
        async with self.lock:
            await self._commit([(
                f"INSERT OR REPLACE INTO checkpoints {CHECKPOINT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    str(c["thread_id"]),
                    c["checkpoint_ns"],
                    checkpoint["id"],
                    c.get("checkpoint_id"),
                    type_,
                    serialized,
                    serialized_metadata,
                ),
            )])
        return {
            "configurable": {
                "thread_id": c["thread_id"],
                "checkpoint_ns": c["checkpoint_ns"],
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not self.is_setup:
            await self.setup()
        self._pending.append((config, writes, task_id, task_path))
        if self._batch is None:
            self._batch = asyncio.ensure_future(self._write_pending())
        await asyncio.shield(self._batch)

    async def _write_pending(self) -> None:
        """Write every call queued until the lock is ours, in one transaction. The values are
        serialized here, under the lock, as ``AsyncSqliteSaver`` does."""
        async with self.lock:
            batch, self._pending, self._batch = self._pending, [], None
            rows: dict[str, list[Row]] = {REPLACE: [], IGNORE: []}
            for config, writes, task_id, task_path in batch:
                c = config["configurable"]
                key = (str(c["thread_id"]), str(c["checkpoint_ns"]), str(c["checkpoint_id"]), task_id, task_path)
                rows[REPLACE if all(w[0] in WRITES_IDX_MAP for w in writes) else IGNORE].extend(
                    (*key, WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value))
                    for idx, (channel, value) in enumerate(writes)
                )
            await self._commit([
                (f"{verb} INTO writes {COLUMNS} VALUES {', '.join([ROW] * len(chunk))}",
                 [value for row in chunk for value in row])
                for verb, verb_rows in rows.items()
                for chunk in (verb_rows[i:i + ROWS_PER_STATEMENT] for i in range(0, len(verb_rows), ROWS_PER_STATEMENT))
            ])
