"""Processes writing one SQLite file take turns on a file lock, not in SQLite's busy handler.

SQLite lets one connection write at a time. A write that finds another process's under way
waits in the busy handler (``PRAGMA busy_timeout``), which sleeps 1, 2, 5, 10, 15, 20, 25 ms and
on between tries, blind to when the other write ends; and the aiosqlite thread that sleeps holds
up every statement of its process, reads included. With ``agent-ng serve --workers 2`` on one
file that was about 25 sleeps a second in each worker at 120 streams (strace). An ``flock`` on
a file beside the database is handed to the next writer by the kernel the moment it is let go.

    turns = WriteTurns(Path("agent.db.writes.lock"))
    async with saver.lock, turns.turn():   # one holder per process: the saver's lock
        ...  # the write transaction, to its commit

A writer that does not take the lock (another program, an earlier version) still meets the busy
handler: correct, only slower. The kernel lets the lock go with the process that dies holding it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class WriteTurns:
    """The exclusive ``flock`` on ``path`` that every writing process of one database takes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """This process's turn to write, from ``take`` to ``give_back``."""
        await self.take()
        try:
            yield
        finally:
            self.give_back()

    async def take(self) -> None:
        """Take this process's turn to write; a wait for another's is a worker thread's, not the loop's.

        Taken by one task of the process at a time (an ``flock`` is the process's: a second
        taker in it would be let in at once, and the first one's release would end both turns).
        """
        fd = self._fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            taking = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
            try:
                await asyncio.shield(taking)
            except asyncio.CancelledError:  # the worker thread goes on: a turn it takes is let go
                taking.add_done_callback(lambda _: self._taken_too_late(taking))
                raise

    def give_back(self) -> None:
        """End the turn; from any thread (the saver's commits end theirs on the SQLite thread)."""
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _taken_too_late(self, taking: asyncio.Future[None]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            self.give_back()

    def close(self) -> None:
        os.close(self._fd)
