"""Redis round trips shared by every task of a process: the commands issued in one event-loop
tick in one pipeline (``Coalesced``), and the live tail of every followed stream in one
``XREAD BLOCK`` (``Tail``).

The event log would otherwise cost a redis-py round trip per streamed token to append it and
one per reader to read it, each about 100 µs of Python, with a pooled connection held in
``XREAD BLOCK`` by every open stream. Shared, one round trip carries whatever is ready, for any
number of runs and streams, on two connections of the log's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from math import ceil, inf
from time import monotonic
from typing import Any

from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError, ResponseError, TimeoutError
from redis.utils import HIREDIS_AVAILABLE

_HIREDIS = HiredisRespSerializer()


def packed(connection: Any, commands: list[tuple[Any, ...]]) -> list[bytes]:
    """``commands`` in RESP, packed by hiredis when it is installed, as redis-py's own sync
    connections pack them: its asyncio connections pack in Python, at about 2.5 times the cost."""
    if not HIREDIS_AVAILABLE:
        return connection.pack_commands(commands)
    return [part for command in commands for part in _HIREDIS.pack(*command)]


async def round_trip(connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``commands`` in one write and their replies, an error reply as its exception; sent once
    more on a new connection when the first try fails (a connection dies with the server), as
    the log's redis-py client does (``Retry(NoBackoff(), 1)``)."""
    for retry in (False, True):
        try:
            await connection.send_packed_command(packed(connection, commands), check_health=False)
            return [await reply(connection) for _ in commands]
        except (ConnectionError, TimeoutError):
            await connection.disconnect()
            if retry:
                raise
        except BaseException:
            await connection.disconnect(nowait=True)  # replies left unread
            raise
    raise AssertionError("unreachable")


async def reply(connection: Any) -> Any:
    """The next reply on ``connection``; an error reply as its exception, not raised."""
    try:
        return await connection.read_response()
    except ResponseError as e:
        return e


class Coalesced:
    """Commands from any task of the process, sent in the order issued: those issued in one
    event-loop tick, or while the previous round trip is out, go in one pipeline. Each caller
    awaits its own reply (an error reply or a lost connection raised to each caller it hits)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sent: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def send(self, *command: str | int | bytes) -> asyncio.Future[Any]:
        """Queue ``command``; its reply, once the round trip carrying it is back."""
        future = asyncio.get_running_loop().create_future()
        self._queued.append((command, future))
        if self._task is None:
            self._task = asyncio.create_task(self._send_queued())
        return future

    async def _send_queued(self) -> None:
        try:
            while self._queued:
                self._sent, self._queued = self._queued, []
                try:
                    replies = await round_trip(self._connection, [command for command, _ in self._sent])
                except Exception as e:
                    replies = [e] * len(self._sent)
                for (_, future), got in zip(self._sent, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(got, Exception):
                        future.set_exception(got)
                    else:
                        future.set_result(got)
                self._sent = []
        finally:
            self._task = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for _, future in self._sent + self._queued:
            if not future.done():
                future.set_exception(ConnectionError("the event log was closed"))
        self._sent, self._queued = [], []
        await self._connection.disconnect()


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

    def __init__(self, connection: Any, send: Callable[..., asyncio.Future[Any]], wake_key: str,
                 block_ms: int, limit: int) -> None:
        self._connection = connection
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
        (got,) = await round_trip(self._connection, [(
            "XREAD", "COUNT", self._limit, "BLOCK", block_ms, "STREAMS", self._wake_key, *self._from,
            self._wake_cursor, *self._from.values(),
        )])
        if isinstance(got, Exception):
            raise got
        return got

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
        await self._connection.disconnect()
