"""Each run's events, kept so a client that lost its stream can join again where it left off.

A run writes every ``AgentEvent`` (as its JSON data) to the log; readers replay the run from
its start or from a cursor, then follow it live until ``run_end``. A reader's SSE ``id`` is
``<run_id>:<cursor>``, so ``Last-Event-ID`` alone says which run and where.

- ``MemoryEventLog`` (default): in this process; a run's events are capped at ``max_events``,
  all runs' together at ``max_bytes`` (oldest finished runs dropped first), and a finished run
  is dropped ``retention_s`` after its end.
- ``RedisEventLog`` (``AGENT_REDIS_URL``): a Redis stream per run (``XADD ... MAXLEN ~``, a key
  TTL, ``XREAD BLOCK`` for the live tail), so any replica can serve the reconnect; a cancel
  asked of one replica reaches the replica running the run by pub/sub.

Both keep an event as its JSON text (``event_json``, which encodes any event) beside its type,
and a reader whose cursor is at or past the run's ``run_end`` gets nothing and is done at once.
``read_batches`` hands that text over as it is kept, every entry ready at one wake in one list (a
streamed token is then decoded by no one, and a reader that fell behind catches up in one step);
``read`` decodes each entry. A log that cannot be reached raises ``EventLogUnavailableError``, one
line naming it.

A run taken over by another replica goes on appending to the same log, so the old holder is
fenced out (``agent_ng.persistence.fencing``): the replica holding the run sets its token
(``fence``) and appends with it; an append with a token that is no longer the run's holder's
raises ``FencedError`` and adds nothing (in Redis the check and the append are one script).
An append without a token is not checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from base64 import b64encode
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from hashlib import sha1
from re import Pattern
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import orjson
from langgraph.types import Send

from agent_ng.contract import EventType
from agent_ng.engine.redis_store import keeping_cancel
from agent_ng.persistence.fencing import FencedError

if TYPE_CHECKING:
    from agent_ng.service.redis_shared import Pipe, Tail
    from agent_ng.service.settings import ServiceSettings

Entry = tuple[str, dict[str, Any]]
"""``(cursor, event data)``."""
Line = tuple[str, str, str]
"""``(cursor, event type, event JSON text)``: an entry as the log keeps it."""

BATCH = 500
"""The most entries one batch of ``read_batches`` holds (one ``XREAD`` in Redis)."""

END = EventType.RUN_END.value

REDIS_CONNECT_TIMEOUT_S = 5.0
"""How long opening a connection to Redis may take before the log counts as unreachable."""
LISTEN_RETRY_S = 0.1
LISTEN_RETRY_MAX_S = 5.0
"""The wait before the cancel listener tries Redis again, doubling from ``LISTEN_RETRY_S``."""

log = logging.getLogger("agent_ng.service")


class EventLogUnavailableError(RuntimeError):
    """The event log's store (Redis) cannot be reached; the message is one line naming it."""


class EventLog(Protocol):
    """Where runs' events are kept for replay: ``MemoryEventLog`` or ``RedisEventLog``."""

    async def open(self, run_id: str, thread_id: str) -> None:
        """Start the log of a new run on ``thread_id``."""

    async def fence(self, run_id: str, token: str | None) -> None:
        """Make ``token`` the run's holder's: only appends with it are taken (none, with ``None``)."""

    async def append(self, run_id: str, data: dict[str, Any], token: str | None = None) -> str:
        """Add one event; returns its cursor. With a ``token``, only if it is the run's holder's
        (else ``FencedError``, nothing added)."""

    async def thread_of(self, run_id: str) -> str | None:
        """The run's thread, or ``None`` when the log does not hold the run (unknown or expired)."""

    def read(self, run_id: str, after: str | None = None) -> AsyncIterator[Entry]:
        """The run's events after ``after`` (all when ``None``), then live ones, to ``run_end``."""

    def read_batches(self, run_id: str, after: str | None = None) -> AsyncIterator[list[Line]]:
        """``read``'s entries undecoded, all those ready at once in one list (at most ``BATCH``)."""

    async def ended(self, run_id: str) -> bool:
        """Whether the run's ``run_end`` is in the log."""

    async def ask_cancel(self, run_id: str) -> None:
        """Ask the replica running ``run_id`` to cancel it."""

    async def cancel_requests(self) -> AsyncIterator[str]:
        """Subscribe (before returning) to the runs other replicas ask to cancel."""

    async def close(self) -> None: ...


def event_json(data: Any) -> str:
    """One event's data as JSON text (orjson: a tenth of ``json.dumps``'s time per token).

    Values JSON has no type for are written as the LangGraph Server writes them
    (``langgraph_api.serde``, ``jsonable``): a message or other pydantic model as its
    ``model_dump()``, a ``Send`` as ``{"node", "args"}``, a set as a list...; LangGraph's
    dataclasses (``Interrupt``, ``Command``) as their fields, as orjson writes any dataclass.
    Any event is encoded, so no stream ends for want of it: text a tool or a model made with
    lone surrogates (which UTF-8 cannot carry) has each one replaced by U+FFFD, and a value
    that is none of those is written as its ``str`` (or its type, when even that fails).
    """
    try:
        return orjson.dumps(data, default=jsonable, option=ORJSON_OPTIONS).decode()
    except TypeError:  # orjson's error for a string that is not valid UTF-8
        text = json.dumps(data, default=_json_default, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def jsonable(value: Any) -> Any:
    """A value orjson has no type for, as ``langgraph_api.serde.default`` makes it (the one
    difference: an exception's message is kept), else as text (``printable``)."""
    if isinstance(value, Send):
        return {"node": value.node, "args": value.arg}
    if isinstance(value, type):
        return printable(value)
    for method in ("model_dump", "dict", "_asdict"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, set | frozenset | deque):
        return list(value)
    if isinstance(value, dt.timezone | ZoneInfo):
        return value.tzname(None)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, Pattern):
        return value.pattern
    if isinstance(value, bytes | bytearray):
        return b64encode(value).decode()
    return printable(value)


def _json_default(value: Any) -> Any:
    """``jsonable`` for ``json.dumps``, which lacks the types orjson writes itself."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return jsonable(value)


def printable(value: Any) -> str:
    """A value JSON has no type for, as text: its ``str``, or its type's name if that fails."""
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def event_id(run_id: str, cursor: str) -> str:
    """The SSE ``id`` of the event at ``cursor`` of ``run_id`` (``parse_event_id`` reads it back)."""
    return f"{run_id}:{cursor}"


def parse_event_id(value: str) -> tuple[str, str] | None:
    """``(run_id, cursor)`` from an SSE id, or ``None`` when it is not one of ours."""
    run_id, sep, cursor = value.strip().partition(":")
    return (run_id, cursor) if sep and run_id and cursor else None


async def decoded(batches: AsyncIterator[list[Line]], loads: Callable[[str], Any]) -> AsyncIterator[Entry]:
    """Each entry of ``batches`` with its data decoded (``read`` from ``read_batches``)."""
    try:
        async for batch in batches:
            for cursor, _, text in batch:
                yield cursor, loads(text)
    finally:
        await batches.aclose()


async def no_requests() -> AsyncIterator[str]:
    """One process has no other replica to ask."""
    for run_id in ():
        yield run_id


@dataclass
class _RunEvents:
    thread_id: str
    events: deque[tuple[int, str, str]]
    """``(seq, event type, event JSON)``, oldest first; ``seq`` counts up by one."""
    bytes: int = 0
    next_seq: int = 1
    ended_at: float | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    """The readers waiting for the next event, each on a future of its own (a cancelled reader
    cancels only its own)."""

    def add(self, kind: str, text: str, max_events: int) -> int:
        """Append an event (dropping the oldest past ``max_events``), waking the waiting readers;
        the bytes this added."""
        dropped = self.drop_oldest() if len(self.events) >= max_events else 0
        self.events.append((self.next_seq, kind, text))
        self.next_seq += 1
        self.bytes += len(text)
        if self.waiters:
            for waiter in self.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.waiters.clear()
        return len(text) - dropped

    def drop_oldest(self) -> int:
        """Drop the oldest event; the bytes it held."""
        _, _, text = self.events.popleft()
        self.bytes -= len(text)
        return len(text)

    def after(self, seq: int) -> list[Line]:
        """The events after ``seq`` that are still held, at most ``BATCH``, oldest first."""
        events = self.events
        new = min(events[-1][0] - seq, len(events)) if events else 0
        if new <= 0:
            return []
        start = len(events) - new
        lines = (events[i] for i in range(start, start + min(new, BATCH)))
        return [(str(seq), kind, text) for seq, kind, text in lines]

    def done_after(self, seq: int) -> bool:
        """Whether nothing can follow ``seq``: the run has ended and ``seq`` is at its end."""
        return self.ended_at is not None and seq >= self.next_seq - 1


@dataclass
class MemoryEventLog:
    """The event log in this process, for one replica, bounded per run and across runs.

    Past ``max_bytes`` (the events' JSON text, all runs together) the finished runs go first,
    oldest end first. A running run is never dropped: when the running runs alone hold more,
    the one holding most loses its oldest events, as it would past ``max_events`` (its live
    readers miss nothing; a join from its start begins later).
    """

    max_events: int = 10_000
    retention_s: float = 600.0
    max_bytes: int = 64_000_000
    _runs: dict[str, _RunEvents] = field(default_factory=dict)
    _finished: dict[str, None] = field(default_factory=dict)
    """The finished runs, in the order they ended."""
    _bytes: int = 0
    _holders: dict[str, str] = field(default_factory=dict)
    """Each fenced run's holder token."""

    async def open(self, run_id: str, thread_id: str) -> None:
        self._drop_expired()
        self._runs[run_id] = _RunEvents(thread_id, deque())

    async def fence(self, run_id: str, token: str | None) -> None:
        if token is None:
            self._holders.pop(run_id, None)
        else:
            self._holders[run_id] = token

    async def append(self, run_id: str, data: dict[str, Any], token: str | None = None) -> str:
        if token is not None and self._holders.get(run_id) != token:
            raise FencedError(run_id)
        run = self._runs[run_id]
        self._bytes += run.add(data["type"], event_json(data), self.max_events)
        if data["type"] == END:
            run.ended_at = monotonic()
            self._finished[run_id] = None
        if self._bytes > self.max_bytes:
            self._bound(keep=run)
        return str(run.next_seq - 1)

    async def thread_of(self, run_id: str) -> str | None:
        self._drop_expired()
        run = self._runs.get(run_id)
        return run.thread_id if run else None

    def read(self, run_id: str, after: str | None = None) -> AsyncIterator[Entry]:
        return decoded(self.read_batches(run_id, after), orjson.loads)

    async def read_batches(self, run_id: str, after: str | None = None) -> AsyncIterator[list[Line]]:
        run = self._runs.get(run_id)
        if run is None:
            return
        last = int(after) if after and after.isdigit() else 0
        while not run.done_after(last):
            if batch := run.after(last):
                last = int(batch[-1][0])
                yield batch
            elif not run.done_after(last):
                waiter = asyncio.get_running_loop().create_future()
                run.waiters.append(waiter)
                await waiter

    async def ended(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        return run is not None and run.ended_at is not None

    async def ask_cancel(self, run_id: str) -> None:
        """Nothing to ask: in one process a run is cancelled where it runs."""

    async def cancel_requests(self) -> AsyncIterator[str]:
        return no_requests()

    async def close(self) -> None:
        self._runs.clear()
        self._finished.clear()
        self._holders.clear()
        self._bytes = 0

    def _drop(self, run_id: str) -> None:
        self._bytes -= self._runs.pop(run_id).bytes
        self._finished.pop(run_id, None)
        self._holders.pop(run_id, None)

    def _drop_expired(self) -> None:
        now = monotonic()
        for run_id in list(self._finished):
            if now - self._runs[run_id].ended_at < self.retention_s:
                break
            self._drop(run_id)

    def _bound(self, keep: _RunEvents) -> None:
        """Back under ``max_bytes``; the event just added to ``keep`` stays whatever its size."""
        while self._bytes > self.max_bytes and self._finished:
            self._drop(next(iter(self._finished)))
        while self._bytes > self.max_bytes:
            largest = max(self._runs.values(), key=lambda run: run.bytes)
            if largest is keep and len(keep.events) == 1:
                return
            self._bytes -= largest.drop_oldest()


FENCED_APPEND = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
local cursor = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[2], 'type', ARGV[6])
if ARGV[7] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if ARGV[5] == '1' then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
return cursor
"""
"""``RedisEventLog.append`` with a token: the append, only when the run's holder key (KEYS[3])
holds the token (ARGV[1]). KEYS: the events, the thread, the holder; ARGV: token, event JSON,
max events, TTL, whether the event is the run's end (from then on the holder key expires too),
the event's type, whether to renew the events' and thread's TTL."""

FENCED_APPEND_SHA = sha1(FENCED_APPEND.encode()).hexdigest()
"""What ``EVALSHA`` names the script by: the script's text is sent only when Redis lacks it, not
with every token."""

RENEW_S = 1.0
"""How often at most (seconds, and never more than a tenth of the TTL) an append of a run renews
its keys' TTL: renewing with every token cost two ``EXPIRE`` per token."""


@dataclass
class RedisEventLog:
    """The event log in Redis, a stream per run, so any replica can serve a reconnect or a cancel.

    A run's keys live ``retention_s`` (whole seconds) from the last renewal of their TTL, which
    the run's first append in a process, its ``run_end`` and the first append ``RENEW_S`` (or a
    tenth of the TTL, if less) after the last renewal make: a run silent for longer than
    ``retention_s`` loses its events, and one silent for less than ``retention_s - RENEW_S``
    keeps them. A run's holder token is kept until its ``run_end`` is appended with it, then as
    long as the log, never lost to silence.

    The appends of all runs issued in one event-loop tick go to Redis in one pipeline, and all
    the process's readers follow their streams' live tails in one ``XREAD BLOCK``
    (``agent_ng.service.redis_shared``), two connections of the log's own. A run this process
    writes unfenced (a run of its own: no other replica can take it over) reaches the process's
    readers from its appends, not back from Redis (``Tail.wrote``).
    """

    url: str
    prefix: str = "agent-ng:"
    max_events: int = 10_000
    retention_s: float = 600.0
    block_ms: int = 5_000
    """How long a reader told of nothing waits before it checks the run still exists."""
    _redis: Any = None
    _shared: Pipe = field(init=False)
    _tail: Tail = field(init=False)
    _renewed: dict[str, float] = field(default_factory=dict)
    """When this process last renewed each running run's TTL."""
    _renewed_bound: int = 1_024

    def __post_init__(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

        self._lost, self._no_script = (ConnectionError, TimeoutError), NoScriptError

        from agent_ng.service.redis_shared import Pipe, Tail

        self._redis = Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            max_connections=10_000,  # redis-py's 100 would refuse a burst of requests (each opens or joins a run)
            retry=Retry(NoBackoff(), 1),  # on a new connection: pooled ones die with the server
        )
        pool = self._redis.connection_pool
        self._shared = Pipe(pool)
        wake = f"{self.prefix}tail:{uuid4().hex}"
        self._tail = Tail(Pipe(pool), self._shared.send, wake, self.block_ms, BATCH)

    def _events(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:events"

    def _thread(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:thread"

    def _holder(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:holder"

    @property
    def _ttl(self) -> int:
        return max(1, int(self.retention_s))

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Around redis-py's calls: Redis out of reach, as ``EventLogUnavailableError``; a
        cancellation redis-py swallowed, raised again (``agent_ng.engine.redis_store.keeping_cancel``).
        The log's own connections (``Pipe``) swallow none: their calls, once per token, catch
        ``_lost`` alone."""
        try:
            with keeping_cancel():
                yield
        except self._lost as e:
            raise self._unreachable(e) from e

    def _unreachable(self, e: Exception) -> EventLogUnavailableError:
        where = self._redis.get_connection_kwargs()
        reason = " ".join(str(e).split()) or type(e).__name__
        return EventLogUnavailableError(
            f"the run event log (Redis at {where.get('host')}:{where.get('port')}) is unreachable: {reason}"
        )

    async def open(self, run_id: str, thread_id: str) -> None:
        with self._reaching():
            await self._redis.set(self._thread(run_id), thread_id, ex=self._ttl)

    async def fence(self, run_id: str, token: str | None) -> None:
        with self._reaching():
            if token is None:
                await self._redis.delete(self._holder(run_id))
            else:
                await self._redis.set(self._holder(run_id), token)

    async def append(self, run_id: str, data: dict[str, Any], token: str | None = None) -> str:
        key, kind, send = self._events(run_id), data["type"], self._shared.send
        now, last = monotonic(), self._renewed.get(run_id)
        renew = kind == END or last is None or now - last >= min(RENEW_S, self._ttl / 10)
        if kind == END:
            self._renewed.pop(run_id, None)
        elif renew:
            self._renew(run_id, now)
        try:
            if token is not None:
                args = (3, key, self._thread(run_id), self._holder(run_id),
                        token, event_json(data), self.max_events, self._ttl, int(kind == END), kind, int(renew))
                try:
                    cursor = await send("EVALSHA", FENCED_APPEND_SHA, *args)
                except self._no_script:  # a Redis that has not seen the script (new, restarted or flushed)
                    cursor = await send("EVAL", FENCED_APPEND, *args)
                if cursor is None:
                    raise FencedError(run_id)
            else:
                text = event_json(data)
                added = send("XADD", key, "MAXLEN", "~", self.max_events, "*", "event", text, "type", kind)
                try:
                    if renew:
                        ttl = self._ttl
                        cursor, *_ = await asyncio.gather(
                            added, send("EXPIRE", key, ttl), send("EXPIRE", self._thread(run_id), ttl)
                        )
                    else:
                        cursor = await added
                except BaseException:
                    self._tail.unsure(key)
                    raise
                self._tail.wrote(key, cursor, ["event", text, "type", kind], last=kind == END)
        except self._lost as e:
            raise self._unreachable(e) from e
        return cursor

    def _renew(self, run_id: str, now: float) -> None:
        """Note the renewal, forgetting those too old to matter once there are many (runs whose
        end another replica appended)."""
        self._renewed[run_id] = now
        if len(self._renewed) > self._renewed_bound:
            fresh = now - RENEW_S
            self._renewed = {run: at for run, at in self._renewed.items() if at > fresh}
            self._renewed_bound = max(1_024, 2 * len(self._renewed))

    async def thread_of(self, run_id: str) -> str | None:
        with self._reaching():
            return await self._redis.get(self._thread(run_id))

    def read(self, run_id: str, after: str | None = None) -> AsyncIterator[Entry]:
        return decoded(self.read_batches(run_id, after), json.loads)  # as Python does: integers of any size

    async def read_batches(self, run_id: str, after: str | None = None) -> AsyncIterator[list[Line]]:
        key, cursor = self._events(run_id), after or "0-0"
        if stream_id(cursor) is None:
            from redis.exceptions import ResponseError

            raise ResponseError(f"invalid stream id {cursor!r}")
        with self._reaching():
            if after is not None and await self._ended_by(run_id, after):
                return
        follow = self._tail.join(key, cursor)
        try:
            while True:
                try:
                    got = await self._tail.take(follow)
                    if not got and not await self._shared.send("EXISTS", self._thread(run_id)):
                        return  # expired, or never started
                except self._lost as e:
                    raise self._unreachable(e) from e
                if not got:
                    continue
                batch = [line(entry) for entry in got]
                ends = [n for n, (_, kind, _) in enumerate(batch) if kind == END]
                if ends:
                    yield batch[: ends[0] + 1]
                    return
                yield batch
        finally:
            self._tail.leave(follow)

    async def _ended_by(self, run_id: str, cursor: str) -> bool:
        """Whether the run's ``run_end`` is at or before ``cursor`` (nothing can follow it)."""
        last = await self._redis.xrevrange(self._events(run_id), count=1)
        if not last or type_of(last[0][1]) != END:
            return False
        end, given = stream_id(last[0][0]), stream_id(cursor)
        return given is not None and end <= given

    async def ended(self, run_id: str) -> bool:
        with self._reaching():
            last = await self._redis.xrevrange(self._events(run_id), count=1)
        return bool(last) and type_of(last[0][1]) == END

    async def ask_cancel(self, run_id: str) -> None:
        with self._reaching():
            await self._redis.publish(self._cancels, run_id)

    async def cancel_requests(self) -> AsyncIterator[str]:
        pubsub = self._redis.pubsub()
        with self._reaching():
            await pubsub.subscribe(self._cancels)
        return self._messages(pubsub)

    @staticmethod
    async def _messages(pubsub: Any) -> AsyncIterator[str]:
        """The cancel requests, across Redis outages: the subscription is renewed once Redis is back."""
        from redis.exceptions import ConnectionError, TimeoutError

        delay_s = LISTEN_RETRY_S
        try:
            while True:
                try:
                    async for message in pubsub.listen():
                        delay_s = LISTEN_RETRY_S
                        if message["type"] == "message":
                            yield message["data"]
                except (ConnectionError, TimeoutError) as e:
                    log.warning("cancel requests: Redis unreachable (%s); retrying in %.1f s", e, delay_s)
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, LISTEN_RETRY_MAX_S)
        finally:
            await pubsub.aclose()

    @property
    def _cancels(self) -> str:
        return f"{self.prefix}cancel"

    async def close(self) -> None:
        await self._tail.close()
        await self._shared.close()
        await self._redis.aclose()


def type_of(fields: dict[str, str]) -> str:
    """The type of a Redis stream entry's event: its ``type`` field, or (an entry a replica of an
    earlier version wrote, without one) its JSON's."""
    return fields.get("type") or orjson.loads(fields["event"])["type"]


def line(entry: list[Any]) -> Line:
    """A raw ``XREAD`` entry (``[id, [field, value, ...]]``) as a ``Line``."""
    at, fields = entry
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    return at, type_of(values), values["event"]


def stream_id(value: str) -> tuple[int, int] | None:
    """A Redis stream id (``<ms>-<seq>``, or ``<ms>``) as a comparable pair; ``None`` if not one."""
    ms, _, seq = value.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (not seq or seq.isdigit()) else None


def event_log(settings: ServiceSettings) -> EventLog:
    """The runs' event log: in Redis when ``AGENT_REDIS_URL`` is set (replicas share it), else in this process."""
    if settings.redis_url:
        return RedisEventLog(
            settings.redis_url,
            prefix=settings.redis_prefix,
            max_events=settings.run_log_max_events,
            retention_s=settings.run_log_retention_s,
        )
    return MemoryEventLog(
        settings.run_log_max_events, settings.run_log_retention_s, settings.run_log_max_bytes
    )
