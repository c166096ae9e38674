"""Configurations that cannot work across processes, refused before the service starts.

What is right for one process can be silently wrong for several: the in-process event log and a
``memory://`` checkpointer are each worker's own, so a reconnect, a join or a cancel that reaches
another worker would find nothing, and an SQLite file is one machine's, so replicas on two
machines would each write their own copy (or corrupt one on a network share). ``refusal`` judges
what the settings alone show; ``shared_sqlite_refusal`` asks Redis which machines use the same
SQLite file, and ``sqlite_presence`` claims it and keeps the claim alive while the service runs.
``agent-ng serve`` checks both before it starts, exiting 2 with the reason; the app's lifespan
checks them again (each worker, or a server started by ``uvicorn --factory``), raising
``RuntimeError`` with it.

The claim is a sorted set in Redis, ``<AGENT_REDIS_PREFIX>sqlite:<absolute db path>``: one member
per process, ``<pid>@<hostname>``, scored with the time (Redis's clock, so the machines' clocks
need not agree) its claim lapses unless renewed. A machine is its ``socket.gethostname()``: two
containers have two, even on one host.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from agent_ng.persistence.checkpoint import sqlite_path
from agent_ng.service.event_log import REDIS_CONNECT_TIMEOUT_S
from agent_ng.service.settings import ServiceSettings

PRESENCE_TTL_S = 30.0
"""How long a process's claim on an SQLite file lasts unless renewed: a machine that stopped
without leaving (killed, gone) blocks another for at most this long."""
PRESENCE_RENEW_S = PRESENCE_TTL_S / 3
"""How often a running service renews its claim."""

log = logging.getLogger(__name__)


def refusal(settings: ServiceSettings) -> str | None:
    """Why ``settings`` cannot work with their number of workers, in one line; None if they can."""
    if settings.workers > 1 and not settings.redis_url:
        return (
            f"{settings.workers} workers need AGENT_REDIS_URL: the in-process event log is each "
            "worker's own, so a reconnect, join or cancel reaching another worker would find nothing"
        )
    if settings.workers > 1 and settings.checkpoint_url.startswith("memory://"):
        return (
            f"{settings.workers} workers cannot share a memory:// checkpointer: each would keep "
            "threads of its own; use sqlite:///path.db (one machine) or postgresql://..."
        )
    return None


async def shared_sqlite_refusal(settings: ServiceSettings) -> str | None:
    """Why this machine may not use its SQLite checkpointer: another machine sharing this Redis
    claims the same file. Claims it for this process as it asks (left again when refused).

    None without ``AGENT_REDIS_URL`` or an SQLite checkpointer. Redis out of reach is a
    ``RuntimeError`` naming it: without it the rule cannot be checked.
    """
    if (path := _sqlite_file(settings)) is None:
        return None
    from redis.exceptions import ConnectionError, TimeoutError

    redis, key = _redis(settings), _claim_key(settings, path)
    try:
        if not (others := await _claim(redis, key)):
            return None
        await redis.zrem(key, _member())
    except (ConnectionError, TimeoutError) as e:
        where = redis.get_connection_kwargs()
        reason = " ".join(str(e).split()) or type(e).__name__
        raise RuntimeError(
            f"Redis at {where.get('host')}:{where.get('port')} is unreachable, so the machines "
            f"sharing the SQLite checkpointer cannot be checked: {reason}"
        ) from e
    finally:
        await redis.aclose()
    return (
        f"the SQLite checkpointer {path} is used by "
        f"replicas on other machines too ({', '.join(sorted(others))}, registered in Redis): an "
        "SQLite file is one machine's; share AGENT_CHECKPOINT_URL=postgresql://... between machines"
    )


@asynccontextmanager
async def sqlite_presence(settings: ServiceSettings) -> AsyncIterator[None]:
    """Claim this process's SQLite checkpointer, renew the claim while inside, leave it on the
    way out; ``RuntimeError`` with ``shared_sqlite_refusal``'s reason when it may not.

    Does nothing without ``AGENT_REDIS_URL`` or an SQLite checkpointer. A renewal that fails
    (Redis down for a moment) is logged and tried again at the next turn.
    """
    if (path := _sqlite_file(settings)) is None:
        yield
        return
    if reason := await shared_sqlite_refusal(settings):
        raise RuntimeError(reason)
    from redis.exceptions import RedisError

    redis, key = _redis(settings), _claim_key(settings, path)
    renewing = asyncio.create_task(_renew(redis, key), name="sqlite-presence")
    try:
        yield
    finally:
        renewing.cancel()
        with suppress(asyncio.CancelledError):
            await renewing
        with suppress(RedisError, OSError):
            await redis.zrem(key, _member())
        await redis.aclose()


def _sqlite_file(settings: ServiceSettings) -> Path | None:
    """The SQLite checkpointer's file, absolute, when replicas share Redis; else None."""
    if not settings.redis_url or not settings.checkpoint_url.startswith("sqlite:"):
        return None
    path = sqlite_path(settings.checkpoint_url)
    return None if path == ":memory:" else Path(path).resolve()


def _claim_key(settings: ServiceSettings, path: Path) -> str:
    return f"{settings.redis_prefix}sqlite:{path}"


def _member() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _redis(settings: ServiceSettings) -> Any:
    from redis.asyncio import Redis

    return Redis.from_url(
        settings.redis_url, decode_responses=True, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S
    )


async def _claim(redis: Any, key: str) -> set[str]:
    """Claim ``key`` for this process (until Redis's now plus the TTL); the other machines'
    live claims."""
    seconds, microseconds = await redis.time()
    now_ms = seconds * 1000 + microseconds // 1000
    ttl_ms = int(PRESENCE_TTL_S * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now_ms)
        pipe.zadd(key, {_member(): now_ms + ttl_ms})
        pipe.pexpire(key, ttl_ms)
        pipe.zrange(key, 0, -1)
        *_, members = await pipe.execute()
    return {member.partition("@")[2] for member in members} - {socket.gethostname()}


async def _renew(redis: Any, key: str) -> None:
    from redis.exceptions import RedisError

    while True:
        await asyncio.sleep(PRESENCE_RENEW_S)
        try:
            await _claim(redis, key)
        except (RedisError, OSError) as e:
            log.warning("could not renew the SQLite checkpointer's claim in Redis: %s", e)
