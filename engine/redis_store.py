"""The tool store in Redis (``redis://host:6379/0``), shared by replicas, through redis.asyncio.

Every key starts with the store's prefix (``agent-ng:`` by default):
``cache:<key>`` holds a result (JSON) and expires by itself; ``cache-order``, a sorted set
scored by store time, says which entries are oldest when the size bound evicts;
``counts:<tool>`` is a hash of counters; ``durations:<tool>`` a list, newest first, trimmed to
``durations_kept``; ``tools`` the set of tool names seen; ``result:<key>`` a finished call's result, expiring by
itself.

The client's connections come from a blocking pool of ``CONNECTIONS``: past that many commands
in flight a call waits for a connection (up to ``CONNECTION_WAIT_S``) rather than failing, as
redis-py's default pool does (``MaxConnectionsError``), which lost the writes of hundreds of
parallel calls.

redis-py (8.1) can swallow a cancellation that comes while a command takes or gives back its
pooled connection: the command completes and the caller goes on, so a stopped run's tool would
start anyway and run unwatched. Every call of the store raises such a cancellation again
(``keeps_cancel``), as ``asyncio`` would have.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

from agent_ng.engine.store import (
    DURATIONS_KEPT,
    RESULTS_KEPT_S,
    CachedResult,
    Content,
    Outcome,
    ToolCounts,
    counter_increments,
)

CONNECTIONS = 100
CONNECTION_WAIT_S = 20.0

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def keeping_cancel() -> Iterator[None]:
    """Raise a cancellation of the current task that came inside the block and that a library
    caught and did not raise (one that came before it, and that the caller handles, stays)."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    yield
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


def keeps_cancel(call: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """``call``, raising a cancellation that came while it ran even if redis-py swallowed it."""

    @wraps(call)
    async def kept(*args: P.args, **kwargs: P.kwargs) -> R:
        with keeping_cancel():
            return await call(*args, **kwargs)

    return kept


class RedisToolStore:
    """The ``ToolStore`` in Redis, every key under ``prefix``; ``open`` it from a ``redis://`` URL."""

    def __init__(
        self, client, max_entries: int, prefix: str, durations_kept: int = DURATIONS_KEPT
    ) -> None:
        self.redis = client
        self.max_entries = max_entries
        self.prefix = prefix
        self.durations_kept = durations_kept

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, max_entries: int, prefix: str, durations_kept: int = DURATIONS_KEPT
    ) -> AsyncIterator[RedisToolStore]:
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
        except ImportError as e:
            raise RuntimeError(
                "a redis:// cache URL needs the redis extra: pip install 'agent-ng[redis]'"
            ) from e
        pool = BlockingConnectionPool.from_url(
            url, decode_responses=True, max_connections=CONNECTIONS, timeout=CONNECTION_WAIT_S
        )
        client = Redis.from_pool(pool)
        try:
            await client.ping()
            yield cls(client, max_entries, prefix, durations_kept)
        finally:
            await client.aclose()

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @keeps_cancel
    async def cached(self, key: str, now: float) -> CachedResult | None:
        raw = await self.redis.get(self._key("cache", key))
        if raw is None:
            return None
        entry = json.loads(raw)
        return (
            CachedResult(entry["content"], entry["expires_at"])
            if entry["expires_at"] > now
            else None
        )

    @keeps_cancel
    async def cache(self, key: str, content: Content, now: float, ttl_s: float) -> None:
        order = self._key("cache-order")
        value = json.dumps({"content": content, "expires_at": now + ttl_s})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("cache", key), value, px=max(1, math.ceil(ttl_s * 1000)))
            pipe.zadd(order, {key: now})
            pipe.zcard(order)
            *_, size = await pipe.execute()
        if size > self.max_entries:
            evicted = await self.redis.zpopmin(order, size - self.max_entries)
            await self.redis.delete(*(self._key("cache", k) for k, _ in evicted))

    @keeps_cancel
    async def record(self, tool: str, outcome: Outcome, duration_s: float | None) -> None:
        counts = self._key("counts", tool)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self._key("tools"), tool)
            for name, add in counter_increments(outcome).items():
                pipe.hincrby(counts, name, add)
            if outcome == "ok" and duration_s is not None:
                durations = self._key("durations", tool)
                pipe.lpush(durations, repr(duration_s))
                pipe.ltrim(durations, 0, self.durations_kept - 1)
            await pipe.execute()

    @keeps_cancel
    async def durations(self, tool: str, limit: int) -> list[float]:
        return [
            float(d) for d in await self.redis.lrange(self._key("durations", tool), 0, limit - 1)
        ]

    @keeps_cancel
    async def recorded_result(self, key: str, now: float) -> str | None:
        return await self.redis.get(self._key("result", key))

    @keeps_cancel
    async def record_result(self, key: str, message: str, now: float) -> None:
        await self.redis.set(self._key("result", key), message, px=int(RESULTS_KEPT_S * 1000))

    @keeps_cancel
    async def counts(self) -> list[ToolCounts]:
        tools = sorted(await self.redis.smembers(self._key("tools")))
        async with self.redis.pipeline(transaction=False) as pipe:
            for tool in tools:
                pipe.hgetall(self._key("counts", tool))
                pipe.lrange(self._key("durations", tool), 0, -1)
            replies = await pipe.execute()
        return [
            ToolCounts(
                tool,
                **{name: int(value) for name, value in counts.items()},
                durations=tuple(float(d) for d in durations),
            )
            for tool, counts, durations in zip(tools, replies[::2], replies[1::2], strict=True)
        ]
