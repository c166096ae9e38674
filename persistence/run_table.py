"""Runs as records in PostgreSQL, each claimed by exactly one replica: a run outlives its replica.

Every run is a row of ``agent_ng_runs`` in the checkpointer's database: ``pending`` until a
replica claims it, ``running`` while claimed, then one of ``FINAL``. A replica holds a run by a
lease (``lease_until``, on the database's clock only) that it renews for all its runs in one
statement; a replica that dies (kill -9, machine gone) stops renewing, its leases lapse, and a
lapsed ``running`` run is claimable again: the next claim takes it over with ``attempt`` + 1 and
``previous_holder`` set, and continues it from its last checkpoint.

Claiming is one statement: ``FOR UPDATE SKIP LOCKED`` picks the oldest claimable row that no
other replica is claiming, so replicas never wait on each other and never get the same run. A
thread runs one run at a time, first come first served: a run is claimable only while no other
run of its thread is running and (when pending) no older one is pending. A unique index on the
running run of each thread makes that hold even against a run whose insert committed late; the
claim that loses that race starts again.

A lapsed lease does not mean a dead replica: one frozen (SIGSTOP, a long pause) may wake up and
write. Fencing keeps it out: each checkpoint write runs ``FENCE_SQL`` in its own transaction, so
it is refused once another replica holds the run (another holder or attempt), and its
``FOR SHARE`` row lock keeps a takeover from claiming the run while such a write is in flight
(the claim skips the run until that transaction ends). A write is therefore either committed
before the takeover or refused. ``evict`` ends the frozen replica's database sessions, which
frees the thread locks it held (``agent_ng.persistence.thread_lock``).

    runs = PostgresRunTable(saver.conn, lease_s=5, timeout_s=5)
    await runs.setup()
    await runs.add(run_id, thread_id, "native", payload)
    run = await runs.claim("replica-a")          # None when nothing is claimable
    cancels = await runs.renew("replica-a")      # every lease_s / 3 or so
    await runs.finish(run.run_id, "replica-a", run.attempt, "done")
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from agent_ng.persistence.pg_reconnect import database_named, once_more

T = TypeVar("T")

FINAL = frozenset({"done", "max_steps", "interrupted", "cancelled", "error"})
"""The statuses a run ends in (those of ``run_end``); ``pending`` and ``running`` are the others."""

APPLICATION_NAME_PREFIX = "agent-ng "
APPLICATION_NAME_BYTES = 63
"""PostgreSQL keeps this much of ``application_name`` (NAMEDATALEN - 1)."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS agent_ng_runs (
        run_id text PRIMARY KEY,
        queue text NOT NULL,
        thread_id text NOT NULL,
        status text NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        holder text,
        lease_until timestamptz,
        kind text NOT NULL,
        payload bytea NOT NULL,
        cancel_requested boolean NOT NULL DEFAULT false,
        error text,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    "ALTER TABLE agent_ng_runs ADD COLUMN IF NOT EXISTS queue text NOT NULL DEFAULT ''",
    """CREATE INDEX IF NOT EXISTS agent_ng_runs_unfinished_by_thread
        ON agent_ng_runs (thread_id, created_at, run_id) WHERE status IN ('pending', 'running')""",
    """CREATE INDEX IF NOT EXISTS agent_ng_runs_claimable
        ON agent_ng_runs (status, lease_until, created_at) WHERE status IN ('pending', 'running')""",
    """CREATE INDEX IF NOT EXISTS agent_ng_runs_held
        ON agent_ng_runs (holder) WHERE status = 'running'""",
    """CREATE UNIQUE INDEX IF NOT EXISTS agent_ng_runs_one_running_per_thread
        ON agent_ng_runs (thread_id) WHERE status = 'running'""",
)

CLAIM_SQL = """
WITH candidate AS (
    SELECT r.run_id, r.holder FROM agent_ng_runs r
    WHERE (r.status = 'pending' OR (r.status = 'running' AND r.lease_until < now()))
      AND r.queue = %(queue)s
      AND (%(run_id)s::text IS NULL OR r.run_id = %(run_id)s::text)
      AND NOT EXISTS (
          SELECT 1 FROM agent_ng_runs o
          WHERE o.thread_id = r.thread_id AND o.run_id <> r.run_id
            AND (o.status = 'running'
                 OR (o.status = 'pending' AND r.status = 'pending'
                     AND (o.created_at, o.run_id) < (r.created_at, r.run_id))))
    ORDER BY r.created_at, r.run_id
    LIMIT 1
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE agent_ng_runs t
SET status = 'running', holder = %(holder)s, attempt = t.attempt + 1,
    lease_until = now() + make_interval(secs => %(lease_s)s), updated_at = now()
FROM candidate c WHERE t.run_id = c.run_id
RETURNING t.*, c.holder AS previous_holder
"""


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run as the table holds it."""

    run_id: str
    thread_id: str
    status: str
    attempt: int
    """0 until first claimed; each claim adds 1."""
    holder: str | None
    """The replica holding it; None when pending, released or final."""
    kind: str
    payload: bytes
    """What to run, as the caller serialised it (opaque to the table, as is ``kind``)."""
    cancel_requested: bool
    error: str | None
    previous_holder: str | None
    """From ``claim``: the replica that held it before (its lease lapsed); None otherwise."""
    created_at: datetime
    updated_at: datetime


_COLUMNS = tuple(f.name for f in fields(RunRow))


def _row(row: dict[str, Any] | None) -> RunRow | None:
    if row is None:
        return None
    return RunRow(**{name: row.get(name) for name in _COLUMNS})


def application_name_of(holder: str) -> str:
    """The ``application_name`` of every connection of replica ``holder`` (what ``evict`` looks for).

    PostgreSQL keeps 63 bytes of printable ASCII; a longer or non-ASCII holder gets a digest of
    its id, so that two holders never share a name (evicting one must not end the other's sessions).
    """
    name = APPLICATION_NAME_PREFIX + holder
    if len(name) <= APPLICATION_NAME_BYTES and name.isascii() and name.isprintable():
        return name
    digest = "~" + hashlib.sha256(holder.encode()).hexdigest()[:16]
    readable = "".join(c if c.isascii() and c.isprintable() else "?" for c in name)
    return readable[: APPLICATION_NAME_BYTES - len(digest)] + digest


class PostgresRunTable:
    """Runs as rows of ``agent_ng_runs`` in the checkpointer's database.

    ``pool`` is an ``AsyncConnectionPool`` of autocommit connections with ``dict_row`` rows
    (the PostgreSQL saver's ``conn``). Each operation takes at most ``timeout_s`` and raises
    ``CheckpointUnavailableError`` when the database cannot be reached; one whose repetition
    changes nothing is run once more after a lost connection.
    """

    def __init__(self, pool: Any, *, lease_s: float, timeout_s: float, queue: str = "agent-ng") -> None:
        self.pool = pool
        self.queue = queue
        """The replicas whose runs these are: a claim takes only the runs of its own queue."""
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self.database = database_named(pool.conninfo)

    async def setup(self) -> None:
        """Create the table and its indexes if missing; replicas starting together take turns."""

        async def create() -> None:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('agent-ng runs setup', 0))")
                for statement in SCHEMA:
                    await conn.execute(statement)

        await self._bounded(create)

    async def add(self, run_id: str, thread_id: str, kind: str, payload: bytes) -> RunRow:
        """Queue a run: ``pending``, attempt 0, after every run already on its thread."""
        row = await self._one(  # once more after a lost connection: it may have been added then
            "INSERT INTO agent_ng_runs (run_id, queue, thread_id, status, kind, payload)"
            " VALUES (%s, %s, %s, 'pending', %s, %s) ON CONFLICT (run_id) DO NOTHING RETURNING *",
            (run_id, self.queue, thread_id, kind, payload),
        )
        row = row or await self.get(run_id)
        assert row is not None
        return row

    async def claim(self, holder: str, *, run_id: str | None = None) -> RunRow | None:
        """Take the oldest claimable run (or ``run_id`` only) for ``holder``; None if there is none.

        Claimable: pending, or running with a lapsed lease (a takeover: ``previous_holder`` is
        the replica that had it), and first in line on its thread.
        """
        params = {"run_id": run_id, "holder": holder, "lease_s": self.lease_s, "queue": self.queue}

        async def claimed() -> RunRow | None:
            while True:
                try:
                    return await self._fetch_one(CLAIM_SQL, params)
                except psycopg.errors.UniqueViolation:  # another run of the thread was claimed meanwhile
                    continue

        return await self._bounded(claimed, repeatable=False)

    async def renew(self, holder: str) -> dict[str, bool]:
        """Extend the lease of every run ``holder`` still holds: {run_id: cancel_requested}.

        A run taken over by another replica is not in it: its holder must stop writing it.
        """
        rows = await self._all(
            "UPDATE agent_ng_runs SET lease_until = now() + make_interval(secs => %s), updated_at = now()"
            " WHERE holder = %s AND status = 'running' RETURNING run_id, cancel_requested",
            (self.lease_s, holder),
        )
        return {row["run_id"]: row["cancel_requested"] for row in rows}

    async def finish(self, run_id: str, holder: str, attempt: int, status: str, error: str | None = None) -> bool:
        """End the run with ``status`` (one of ``FINAL``) if ``holder``'s ``attempt`` still holds it."""
        if status not in FINAL:
            raise ValueError(f"a run ends in one of {sorted(FINAL)}, not {status!r}")
        row = await self._one(
            "UPDATE agent_ng_runs SET status = %s, error = %s, holder = NULL, lease_until = NULL,"
            " updated_at = now()"
            " WHERE run_id = %s AND holder = %s AND attempt = %s AND status = 'running' RETURNING *",
            (status, error, run_id, holder, attempt),
            repeatable=False,
        )
        return row is not None

    async def release(self, holder: str, *, run_ids: Collection[str] | None = None) -> list[str]:
        """Hand ``holder``'s runs (those of ``run_ids`` only, if given) over, as on a graceful
        shutdown: claimable by others at once. The run ids it let go of."""
        rows = await self._all(
            "UPDATE agent_ng_runs SET holder = NULL, lease_until = '-infinity', updated_at = now()"
            " WHERE holder = %(holder)s AND status = 'running'"
            " AND (%(run_ids)s::text[] IS NULL OR run_id = ANY(%(run_ids)s::text[])) RETURNING run_id",
            {"holder": holder, "run_ids": None if run_ids is None else list(run_ids)},
        )
        return [row["run_id"] for row in rows]

    async def request_cancel(self, run_id: str) -> RunRow | None:
        """Ask for the run to stop: a pending run is cancelled at once, a running one's holder
        sees the flag on its next ``renew``. The row after the change; None for an unknown run."""
        return await self._one(
            """WITH changed AS (
                UPDATE agent_ng_runs SET cancel_requested = true, updated_at = now(),
                    status = CASE status WHEN 'pending' THEN 'cancelled' ELSE status END
                WHERE run_id = %(run_id)s AND status IN ('pending', 'running')
                RETURNING *
            )
            SELECT * FROM changed
            UNION ALL
            SELECT * FROM agent_ng_runs WHERE run_id = %(run_id)s AND NOT EXISTS (SELECT 1 FROM changed)""",
            {"run_id": run_id},
        )

    async def get(self, run_id: str) -> RunRow | None:
        """The run, or None if the table has no such run."""
        return await self._one("SELECT * FROM agent_ng_runs WHERE run_id = %s", (run_id,))

    async def busy(self, thread_id: str, *, besides: str | None = None) -> bool:
        """Whether the thread has a pending or running run other than ``besides``."""
        row = await self._first(
            "SELECT EXISTS (SELECT 1 FROM agent_ng_runs WHERE thread_id = %s"
            " AND status IN ('pending', 'running') AND run_id IS DISTINCT FROM %s) AS busy",
            (thread_id, besides),
        )
        return bool(row["busy"])

    async def queued(self) -> int:
        """How many runs wait to be claimed."""
        row = await self._first(
            "SELECT count(*) AS queued FROM agent_ng_runs WHERE status = 'pending' AND queue = %s", (self.queue,)
        )
        return int(row["queued"])

    async def prune(self, older_than_s: float) -> int:
        """Delete this queue's runs that ended more than ``older_than_s`` ago; how many."""
        rows = await self._all(
            "DELETE FROM agent_ng_runs WHERE queue = %s AND status NOT IN ('pending', 'running')"
            " AND updated_at < now() - make_interval(secs => %s) RETURNING run_id",
            (self.queue, older_than_s),
        )
        return len(rows)

    async def evict(self, holder: str) -> int:
        """End the database sessions of replica ``holder`` (which lost its runs), waiting until
        they are gone, so the thread locks they held are free even if that replica is only frozen.
        How many ended."""
        wait_ms = max(1, int(self.timeout_s * 1000 / 2))
        row = await self._first(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, %s)) AS ended FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (wait_ms, application_name_of(holder)),
        )
        return int(row["ended"])

    async def _fetch_one(self, query: str, params: Any) -> RunRow | None:
        async with self.pool.connection() as conn:
            return _row(await (await conn.execute(query, params)).fetchone())

    async def _one(self, query: str, params: Any, *, repeatable: bool = True) -> RunRow | None:
        return await self._bounded(lambda: self._fetch_one(query, params), repeatable=repeatable)

    async def _first(self, query: str, params: Any) -> dict[str, Any]:
        async def first() -> dict[str, Any]:
            async with self.pool.connection() as conn:
                return await (await conn.execute(query, params)).fetchone()

        return await self._bounded(first)

    async def _all(self, query: str, params: Any) -> list[dict[str, Any]]:
        async def rows() -> list[dict[str, Any]]:
            async with self.pool.connection() as conn:
                return await (await conn.execute(query, params)).fetchall()

        return await self._bounded(rows)

    async def _bounded(self, operation: Callable[[], Awaitable[T]], *, repeatable: bool = True) -> T:
        """``operation`` within ``timeout_s``, once more after a lost connection if ``repeatable``
        (a claim or a finish whose answer was lost may have happened: it is not repeated)."""

        async def recover(error: BaseException) -> None:
            await self.pool.check()

        return await once_more(operation, recover, self.timeout_s, self.database, repeatable=repeatable)
