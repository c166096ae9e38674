"""Redis round trips shared by every task of a process: the log's commands pipelined on one
connection (``Pipe``), and the live tail of every followed stream in one ``XREAD BLOCK``
(``Tail``).

The event log would otherwise cost a redis-py round trip per streamed token to append it and
one per reader to read it, each about 100 µs of Python, with a pooled connection held in
``XREAD BLOCK`` by every open stream. Shared, one write carries whatever is ready, for any
number of runs and streams, on two connections of the log's own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from math import ceil, inf
from time import monotonic
from typing import Any

import hiredis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError


def packed(commands: list[tuple[Any, ...]]) -> bytes:
    """``commands`` in RESP, as redis-py packs them (hiredis, as its sync connections do)."""
    return b"".join(map(hiredis.pack_command, commands))


def error_reply(message: str) -> ResponseError:
    """An error reply as redis-py raises it, ``NoScriptError`` being the one the log handles."""
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


class Pipe(asyncio.Protocol):
    """Commands from any task of the process on one connection, sent in the order issued: those
    issued in one event-loop tick go in one write, without waiting for the replies to earlier
    ones (Redis answers in order). Each caller awaits its own reply, an error reply raised to it.
    A lost connection fails the commands it carried; the next command opens a new one.

    redis-py opens each connection (so its handshake: AUTH, SELECT, TLS, HELLO), then this
    protocol carries it, its replies parsed by hiredis as they arrive. redis-py's own asyncio
    round trip (a task, a stream reader and a timeout scope each) costs twice as much CPU for
    a command sent alone, as a paced token's append is (90 against 45 µs on this machine).
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._connection: Any = None
        self._transport: asyncio.Transport | None = None
        self._opening: asyncio.Task[None] | None = None
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._reader: Any = None
        """A hiredis reader of the open connection's replies."""

    def send(self, *command: str | int | bytes) -> asyncio.Future[Any]:
        """Queue ``command``; its reply, once Redis has answered it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queued.append((command, future))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        if not self._queued:
            return
        if self._transport is None:
            if self._opening is None:
                self._opening = asyncio.create_task(self._open())
            return
        commands, self._queued = self._queued, []
        self._waiting.extend(future for _, future in commands)
        self._transport.write(packed([command for command, _ in commands]))

    async def _open(self) -> None:
        if self._connection is not None:  # the one lost: its redis-py object is closed too
            lost, self._connection = self._connection, None
            await lost.disconnect(nowait=True)
        connection = self._pool.make_connection()
        try:
            await connection.connect()
            transport = connection._writer.transport  # redis-py's stream writer: its handshake is done
        except Exception as e:  # Redis out of reach: told to the commands that waited for it
            await connection.disconnect(nowait=True)
            self._fail(self._queued, e)
            self._queued = []
            return
        finally:
            self._opening = None
        self._connection, self._transport = connection, transport
        self._reader = hiredis.Reader(encoding="utf-8", replyError=error_reply)
        transport.set_protocol(self)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (got := self._reader.gets()) is not False:
            future = self._waiting.popleft()
            if future.done():
                continue
            if isinstance(got, ResponseError):
                future.set_exception(got)
            else:
                future.set_result(got)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        waiting, self._waiting = list(self._waiting), deque()
        reason = f": {exc}" if exc else ""
        self._fail([(None, future) for future in waiting], ConnectionError(f"the connection to Redis was lost{reason}"))

    @staticmethod
    def _fail(commands: list[tuple[Any, asyncio.Future[Any]]], error: Exception) -> None:
        for _, future in commands:
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        self._fail(self._queued, ConnectionError("the event log was closed"))
        self._queued = []
        if self._connection is not None:
            await self._connection.disconnect(nowait=True)


@dataclass(eq=False)
class Follow:
    """One reader's place in the tail: its cursor (the last entry handed to it) and what arrived
    for it that it has not taken yet."""

    key: str
    cursor: str
    entries: list[Any] = field(default_factory=list)
    since: float = field(default_factory=monotonic)
    """When it last got entries or was told none came."""
    idle: bool = False
    error: BaseException | None = None
    paused: bool = False
    """Left out of the ``XREAD`` while it holds ``limit`` entries untaken."""
    waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def position(value: str) -> tuple[int, int]:
    """A valid stream id (``<ms>-<seq>`` or ``<ms>``) as a comparable pair."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


TAIL_INTERVAL_S = 0.01
"""While runs stream side by side (the last ``XREAD`` brought entries of more than one), the
tail sends at most one ``XREAD`` per this long, so one carries the entries of many runs.
Redis answers an ``XREAD`` as soon as one of its streams has an entry: one per append round
trip, each naming hundreds of streams, cost Redis about 100 µs of CPU per token and the server
about 100 µs more than at 10 ms (15 µs in Redis; the scaling bench at K = 120 and 200). A token
reaches its readers up to this much later (a fifth of the gap between tokens at 20 per second);
a reader still gets everything ready in one batch. One run streaming alone is read at once."""
WAKE_TTL_S = 3_600
"""How long a wake stream outlives its last wake (that of a process gone without closing its log)."""


class Tail:
    """The live tail of every stream a reader of the process follows, in one ``XREAD BLOCK`` on
    a connection of its own, each reader handed the entries past its own cursor.

    A stream this process writes alone (``wrote``: the appends of a run of this process, never
    fenced, so no other process writes its stream) is read from its appends instead: a reader
    whose cursor is the last entry written is handed each next one as its append is answered,
    and its stream is left out of the ``XREAD``. Until then (it joined from further back, or
    before the first append) and whenever an append's fate is unknown (``unsure``), the
    ``XREAD`` reads it.

    A reader that joins while the ``XREAD`` is out without its stream (or from further back)
    adds an entry to the process's wake stream, which the ``XREAD`` always includes from the last
    wake it saw, so a wake that reaches Redis before the ``XREAD`` counts too. A reader that
    got nothing for ``block_ms`` wakes with no entries (to check its run still exists). A failed
    ``XREAD`` is raised to every reader; the next reader to join starts the tail again.

    What the ``XREAD`` asks is kept up to date as readers come, go and get entries.
    """

    def __init__(self, reads: Pipe, send: Callable[..., asyncio.Future[Any]], wake_key: str,
                 block_ms: int, limit: int) -> None:
        self._reads = reads
        self._send = send
        self._wake_key, self._wake_cursor = wake_key, "0-0"
        self._block_s = block_ms / 1000
        self._limit = limit
        self._follows: dict[str, list[Follow]] = {}
        self._from: dict[str, str] = {}
        """Each stream read and from where: the earliest cursor of its readers taking entries."""
        self._due = inf
        """When the next reader is to be told that nothing came (at the earliest)."""
        self._task: asyncio.Task[None] | None = None
        self._reading: dict[str, str] | None = None
        """``_from`` as the ``XREAD`` that is out asked it."""
        self._woken = False
        self._written: dict[str, str] = {}
        """The last entry this process wrote to each stream it writes alone."""

    def join(self, key: str, cursor: str) -> Follow:
        follow = Follow(key, cursor)
        self._follows.setdefault(key, []).append(follow)
        self._due = min(self._due, follow.since + self._block_s)
        self._update(key)
        self._cover(follow)
        return follow

    def leave(self, follow: Follow) -> None:
        follows = self._follows.get(follow.key, [])
        if follow in follows:
            follows.remove(follow)
            if not follows:
                del self._follows[follow.key]
            self._update(follow.key)

    async def take(self, follow: Follow) -> list[Any]:
        """The entries arrived for ``follow`` (at most ``limit``), waiting for some; none when
        nothing came for ``block_ms``."""
        if not follow.entries and follow.error is None and not follow.idle:
            follow.waiter = asyncio.get_running_loop().create_future()
            try:
                await follow.waiter
            finally:
                follow.waiter = None
        if follow.error is not None:
            raise follow.error.with_traceback(None)  # one error for every reader: a traceback of each one's own
        follow.idle = False
        taken = follow.entries
        if len(taken) > self._limit:
            taken, follow.entries = taken[: self._limit], taken[self._limit :]
        else:
            follow.entries = []
        if follow.paused and len(follow.entries) < self._limit:
            follow.paused = False
            self._update(follow.key)
            self._cover(follow)
        return taken

    def wrote(self, key: str, cursor: str, fields: list[str], last: bool) -> None:
        """This process appended ``fields`` at ``cursor`` to ``key``, which it writes alone
        (``last``: nothing follows it): readers caught up with its previous append are handed it."""
        previous = self._written.get(key)
        if previous is not None and position(cursor) <= position(previous):
            self.unsure(key)  # answered out of order: the XREAD sorts it out
            return
        if last:
            self._written.pop(key, None)
        else:
            self._written[key] = cursor
        if previous is None:
            return
        now = monotonic()
        for follow in self._follows.get(key, ()):
            if follow.cursor == previous and not follow.paused and follow.error is None:
                follow.entries.append([cursor, fields])
                follow.cursor, follow.since = cursor, now
                follow.paused = len(follow.entries) >= self._limit
                follow.wake()
        if not last:
            self._update(key)  # a reader the XREAD brought to ``cursor`` first is caught up too

    def unsure(self, key: str) -> None:
        """An append to ``key`` may or may not have been made: its readers go back to the ``XREAD``."""
        if self._written.pop(key, None) is None:
            return
        self._update(key)
        for follow in self._follows.get(key, ()):
            self._cover(follow)

    def _caught_up(self, follow: Follow) -> bool:
        return self._written.get(follow.key) == follow.cursor

    def _update(self, key: str) -> None:
        """``_from`` for ``key`` after a change to its readers."""
        at = None
        for follow in self._follows.get(key, ()):
            if follow.paused or follow.error is not None or self._caught_up(follow):
                continue
            if at is None or position(follow.cursor) < position(at):
                at = follow.cursor
        if at == self._from.get(key):
            return
        if at is None:
            del self._from[key]
            return
        self._from[key] = at

    def _cover(self, follow: Follow) -> None:
        """Have the tail read ``follow``'s stream from its cursor: start it, or wake the ``XREAD``
        that is out without it."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
            return
        reading = self._reading
        if reading is None or self._woken or self._caught_up(follow):
            return
        at = reading.get(follow.key)
        if at is None or position(follow.cursor) < position(at):
            self._woken = True
            for woken in (self._send("XADD", self._wake_key, "MAXLEN", 1, "*", "w", 1),
                          self._send("EXPIRE", self._wake_key, WAKE_TTL_S)):
                woken.add_done_callback(lambda f: f.cancelled() or f.exception())  # the XREAD reports a failure

    async def _run(self) -> None:
        sent, crowded = -inf, False
        try:
            while self._follows:
                if crowded and (wait_s := sent + TAIL_INTERVAL_S - monotonic()) > 0:
                    await asyncio.sleep(wait_s)
                    continue
                sent = monotonic()
                block_ms = self._tell_idle()
                reading = self._reading = self._from.copy()
                self._woken = False
                try:
                    got = await self._xread(block_ms)
                finally:
                    self._reading = None
                crowded = bool(got) and self._deliver(got, reading) > 1
        except Exception as e:
            for follows in self._follows.values():
                for follow in follows:
                    follow.error = e
                    follow.wake()
            for key in list(self._from):
                self._update(key)
        finally:
            self._task = None

    def _tell_idle(self) -> int:
        """Wake the waiting readers that got nothing for ``block_ms``; how long the ``XREAD`` may
        block, until the next one is due."""
        now = monotonic()
        if now >= self._due:
            self._due = inf
            for follows in self._follows.values():
                for follow in follows:
                    if follow.since + self._block_s <= now:
                        follow.since, follow.idle = now, follow.waiter is not None
                        follow.wake()
                    self._due = min(self._due, follow.since + self._block_s)
        wait_s = self._due - now if self._due < inf else self._block_s
        return max(1, ceil(wait_s * 1000))

    async def _xread(self, block_ms: int) -> Any:
        return await self._reads.send(
            "XREAD", "COUNT", self._limit, "BLOCK", block_ms, "STREAMS", self._wake_key, *self._from,
            self._wake_cursor, *self._from.values(),
        )

    def _deliver(self, got: Any, reading: dict[str, str]) -> int:
        """Hand each reader its entries; how many runs' streams had some."""
        now, streams = monotonic(), 0
        for key, entries in got.items() if isinstance(got, dict) else got:  # RESP3 a map, RESP2 pairs
            if key == self._wake_key:
                self._wake_cursor = entries[-1][0]
                continue
            streams += 1
            asked = reading[key]
            for follow in self._follows.get(key, ()):
                if follow.paused or follow.error is not None:
                    continue
                if follow.cursor == asked:
                    new = entries
                elif (after := position(follow.cursor)) < position(asked):
                    continue  # joined since, from further back: the next XREAD (woken) reads it
                else:
                    new = [entry for entry in entries if position(entry[0]) > after]
                if new:
                    follow.entries.extend(new)
                    follow.cursor, follow.since = new[-1][0], now
                    follow.paused = len(follow.entries) >= self._limit
                    follow.wake()
            self._update(key)
        return streams

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for follows in self._follows.values():
            for follow in follows:
                follow.error = ConnectionError("the event log was closed")
                follow.wake()
        await self._reads.close()
