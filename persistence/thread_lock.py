"""One run per thread at a time: a second run on a busy thread is refused with ``ThreadBusyError``.

Two runs writing one thread at once would interleave their model turns and tool results in its
checkpoints, so ``events.stream`` holds the thread's lock for the whole run and every consumer
(CLI, embedding, service) gets the same guarantee. The lock reaches as far as the checkpointer:

- always, in the process: a set of the threads this process is running;
- SQLite (``open_checkpointer``): also an ``flock`` on a small file per thread next to the
  database, so other processes on the machine are refused too; the kernel drops it when the
  process dies, so a crash never leaves a thread locked;
- PostgreSQL (``open_checkpointer``): also ``pg_try_advisory_lock`` keyed by the thread id, held on
  one session of this process, so other replicas are refused; PostgreSQL drops it with the session.

Refusing instead of waiting keeps the caller in charge: retry later, or tell the person.

    async with hold_thread(graph, "t1"):   # raises ThreadBusyError if a run holds "t1"
        ...

A replica taking over a run whose holder it fenced out waits instead, briefly: that holder may
still be inside the run, holding the thread, until it notices (``ThreadLocks.free``).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from time import monotonic
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from langgraph.checkpoint.base import BaseCheckpointSaver

from agent_ng.persistence.unavailable import CheckpointUnavailableError

ADVISORY_LOCK_PREFIX = "agent-ng thread:"
FREE_POLL_S = 0.02
FREE_POLL_MAX_S = 0.5
"""How often ``ThreadLocks.free`` tries the lock: from ``FREE_POLL_S``, doubling up to ``FREE_POLL_MAX_S``."""
T = TypeVar("T")


class ThreadBusyError(RuntimeError):
    """Another run is writing this thread; nothing of this run was written."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} is busy: another run is writing it; try again when that run ends"
        )
        self.thread_id = thread_id


class ThreadLocks:
    """Threads busy in this process; subclasses add a lock that other processes see too."""

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self.released: list[Callable[[str], None]] = []
        """Called with the thread id each time a hold ends (``agent_ng.persistence.retention`` prunes then)."""

    @asynccontextmanager
    async def hold(self, thread_id: str) -> AsyncIterator[None]:
        if thread_id in self._busy:
            raise ThreadBusyError(thread_id)
        self._busy.add(thread_id)
        try:
            if not await self._acquire(thread_id):
                raise ThreadBusyError(thread_id)
            try:
                yield
            finally:
                await self._release(thread_id)
                for listener in self.released:
                    listener(thread_id)
        finally:
            self._busy.discard(thread_id)

    async def free(self, thread_id: str, within_s: float) -> bool:
        """Whether no run, in this process or another, holds ``thread_id`` now or within ``within_s``.

        It tries the lock (and lets it go at once) until it gets it or ``within_s`` has passed:
        a replica that took a run over from one it fenced out, or was handed it, runs it only
        once the old holder has left the thread (its session ended, its process died or it
        noticed the fence).
        """
        deadline = monotonic() + within_s
        delay_s = FREE_POLL_S
        while not await self._try(thread_id):
            left = deadline - monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(delay_s, left))
            delay_s = min(delay_s * 2, FREE_POLL_MAX_S)
        return True

    async def _try(self, thread_id: str) -> bool:
        """Take the thread's lock and let it go at once; whether it could be taken."""
        if thread_id in self._busy:
            return False
        self._busy.add(thread_id)
        try:
            if not await self._acquire(thread_id):
                return False
            await self._release(thread_id)
            return True
        finally:
            self._busy.discard(thread_id)

    async def _acquire(self, thread_id: str) -> bool:
        return True

    async def _release(self, thread_id: str) -> None:
        return None


class FileThreadLocks(ThreadLocks):
    """``flock`` on ``<directory>/<hash of thread id>.lock``: other processes on this machine."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._open: dict[str, int] = {}

    def path(self, thread_id: str) -> Path:
        return self.directory / f"{hashlib.sha256(thread_id.encode()).hexdigest()[:32]}.lock"

    async def _acquire(self, thread_id: str) -> bool:
        locking = asyncio.ensure_future(asyncio.to_thread(self._lock, thread_id))
        try:
            fd = await asyncio.shield(locking)
        except asyncio.CancelledError:  # the worker thread goes on: a lock it takes must not stay held
            locking.add_done_callback(_close_taken)
            raise
        if fd is None:
            return False
        self._open[thread_id] = fd
        return True

    def _lock(self, thread_id: str) -> int | None:
        """In a worker thread: file system calls may block (a slow or network disk), the loop may not."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(thread_id), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    async def _release(self, thread_id: str) -> None:
        os.close(self._open.pop(thread_id))


def _close_taken(locking: asyncio.Future[int | None]) -> None:
    if not locking.cancelled() and locking.exception() is None and (fd := locking.result()) is not None:
        os.close(fd)


class PostgresThreadLocks(ThreadLocks):
    """Session advisory locks on one connection of this process: every replica sees them.

    The session names this replica in its ``application_name`` (``application_name_of``), so a
    replica taking over this one's runs can end it, and its locks with it.

    If that session is lost, PostgreSQL has released its locks; the next lock opens a new one
    (runs holding a lock then are no longer protected from other replicas until they end).
    Each statement has ``timeout_s`` (``agent_ng.persistence.pg_reconnect.within``): a lock that
    cannot be taken in time raises ``CheckpointUnavailableError``; a release that cannot be
    made (in time) drops the session, which releases its locks as PostgreSQL notices.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        super().__init__()
        self.url = url
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._connecting = asyncio.Lock()
        self._held: dict[str, Any] = {}

    async def session(self) -> Any:
        """The live session (``psycopg.AsyncConnection``, autocommit), opened when needed."""
        from psycopg import AsyncConnection

        from agent_ng.persistence.pg_reconnect import connect_timeout
        from agent_ng.persistence.replica import REPLICA_ID
        from agent_ng.persistence.run_table import application_name_of

        async with self._connecting:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = await AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=connect_timeout(self.timeout_s),
                    application_name=application_name_of(REPLICA_ID),
                )
            return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def _bounded(self, operation: Callable[[], Awaitable[T]]) -> T:
        from agent_ng.persistence.pg_reconnect import database_named, within

        return await within(self.timeout_s, operation, database_named(self.url))

    async def _acquire(self, thread_id: str) -> bool:
        from psycopg import OperationalError

        from agent_ng.persistence.pg_reconnect import database_named, unreachable

        query = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"

        async def lock() -> tuple[Any, bool]:
            conn = await self.session()
            try:
                cur = await conn.execute(query, (ADVISORY_LOCK_PREFIX + thread_id,))
            except OperationalError:
                if not conn.broken:
                    raise
                conn = await self.session()
                cur = await conn.execute(query, (ADVISORY_LOCK_PREFIX + thread_id,))
            return conn, bool((await cur.fetchone())[0])

        try:
            conn, locked = await self._bounded(lock)
        except OperationalError as e:
            raise unreachable(database_named(self.url), e) from e
        except CheckpointUnavailableError:
            self._drop(self._conn)
            raise
        if locked:
            self._held[thread_id] = conn
        return locked

    async def _release(self, thread_id: str) -> None:
        from psycopg import OperationalError


        conn = self._held.pop(thread_id)
        if conn.closed or conn.broken:
            return
        unlock = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"
        try:
            await self._bounded(lambda: conn.execute(unlock, (ADVISORY_LOCK_PREFIX + thread_id,)))
        except (CheckpointUnavailableError, OperationalError):  # the lock goes with the session
            self._drop(conn)

    def _drop(self, conn: Any) -> None:
        """Close a session that did not answer; the next lock opens a new one."""
        if conn is not None:
            conn.pgconn.finish()
        if conn is self._conn:
            self._conn = None


_locks: WeakKeyDictionary[BaseCheckpointSaver, ThreadLocks] = WeakKeyDictionary()


def attach(saver: BaseCheckpointSaver, locks: ThreadLocks) -> None:
    """Make ``locks`` the thread locks of every graph that checkpoints to ``saver``."""
    _locks[saver] = locks


def locks_of(saver: BaseCheckpointSaver) -> ThreadLocks:
    """The saver's thread locks (in-process only if none were attached)."""
    locks = _locks.get(saver)
    if locks is None:
        locks = _locks[saver] = ThreadLocks()
    return locks


def hold_thread(graph: Any, thread_id: str | None) -> AbstractAsyncContextManager[None]:
    """Hold ``thread_id`` of ``graph``'s checkpointer; a no-op without a thread or checkpointer."""
    saver = getattr(graph, "checkpointer", None)
    if thread_id is None or not isinstance(saver, BaseCheckpointSaver):
        return nullcontext()
    return locks_of(saver).hold(thread_id)
