"""An aiosqlite connection whose cursors read in one trip to its thread.

aiosqlite runs each call on its connection's thread: opening a cursor, executing, fetching and
closing are a trip each, a thread hop and a wake of the event loop. ``AsyncSqliteSaver`` loads
a checkpoint through a cursor (``aget_tuple``: open, execute, fetch, execute the pending
writes' query, fetch, close), so every load costs six trips, four for a thread with no
checkpoint yet; and a run loads its thread's latest checkpoint more than once
(``agent_ng.persistence.load_memo`` says when). Under load each trip waits for the event loop and the GIL.

Through ``OneTripReads`` a cursor costs nothing to open or close, and ``execute`` runs the
statement and fetches all its rows in one trip (aiosqlite's ``execute_fetchall``); the fetches
then read those rows. So a checkpoint loads in two trips, one for a thread with none. Every
other call goes to the connection as it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from typing import Any


class ReadCursor:
    """A cursor over rows fetched with their statement; ``await``-able and an async context
    manager, as aiosqlite's ``cursor()`` is."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._rows: deque[Any] = deque()

    def __await__(self) -> Generator[Any, None, ReadCursor]:
        return self._opened().__await__()

    async def _opened(self) -> ReadCursor:
        return self

    async def __aenter__(self) -> ReadCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._rows.clear()

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> ReadCursor:
        self._rows = deque(await self._connection.execute_fetchall(sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> ReadCursor:
        async with self._connection.executemany(sql, parameters):
            self._rows.clear()
        return self

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int = 1) -> list[Any]:
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    async def fetchall(self) -> list[Any]:
        rows, self._rows = list(self._rows), deque()
        return rows

    async def __aiter__(self) -> AsyncIterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    async def close(self) -> None:
        self._rows.clear()


class OneTripReads:
    """``connection`` (aiosqlite's), its ``cursor()`` a ``ReadCursor``."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def cursor(self) -> ReadCursor:
        return ReadCursor(self._connection)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._connection.__await__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)
