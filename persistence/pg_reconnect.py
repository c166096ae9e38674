"""A PostgreSQL checkpointer that survives a lost connection with one retry.

Behind PgBouncer (or across a database failover) every connection in the pool can break at
once: a pooler restart closes them all. ``ReconnectingPostgresSaver`` turns that into at most one
retried operation: when an operation fails because its connection is gone, it has the pool test
its idle connections (``AsyncConnectionPool.check``: broken ones are replaced) and runs the
operation once more. Every retried operation is idempotent: ``aput`` and ``aput_writes`` are
upserts, the others read, so a write that reached the database before the connection dropped is
written again unchanged and no checkpoint is lost. Any other error, or a second failure, is
raised as before.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECTION_LOST = ("08", "57P")
"""SQLSTATE classes of a lost connection: connection exception, operator intervention (shutdown)."""


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` means the connection is gone (worth one retry), not that the statement failed."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    return error.sqlstate is None or error.sqlstate.startswith(CONNECTION_LOST)


class ReconnectingPostgresSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` that runs an operation once more after a lost connection."""

    retried: int = 0
    """Operations this saver ran a second time after a lost connection."""

    async def _recover(self, error: BaseException) -> None:
        self.retried += 1
        log.warning("checkpointer lost its connection (%s); retrying once", str(error).strip())
        await self.conn.check()

    async def _once_more(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except psycopg.OperationalError as e:
            if not connection_lost(e):
                raise
            await self._recover(e)
        return await operation()

    async def aget_tuple(self, config: Any) -> Any:
        return await self._once_more(lambda: super(ReconnectingPostgresSaver, self).aget_tuple(config))

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await self._once_more(
            lambda: super(ReconnectingPostgresSaver, self).aput(config, checkpoint, metadata, new_versions)
        )

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        await self._once_more(
            lambda: super(ReconnectingPostgresSaver, self).aput_writes(config, writes, task_id, task_path)
        )

    async def adelete_thread(self, thread_id: str) -> None:
        await self._once_more(lambda: super(ReconnectingPostgresSaver, self).adelete_thread(thread_id))

    async def alist(self, config: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Retried only when nothing was yielded yet (the rows are fetched before the first)."""
        started = False
        try:
            async for item in super().alist(config, **kwargs):
                started = True
                yield item
            return
        except psycopg.OperationalError as e:
            if started or not connection_lost(e):
                raise
            await self._recover(e)
        async for item in super().alist(config, **kwargs):
            yield item
