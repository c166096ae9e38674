"""The in-process event log's bounds, end and batches, Redis's batches, its shared round trips
(appends coalesced, one tail for every reader) and TTL renewal, and the one encoder every event
goes through."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent_ng.persistence.fencing import FencedError
from agent_ng.service import event_log as event_log_module
from agent_ng.service import redis_shared
from agent_ng.service.event_log import (
    BATCH,
    RENEW_S,
    EventLogUnavailableError,
    MemoryEventLog,
    RedisEventLog,
    event_json,
    event_log,
)
from agent_ng.service.settings import ServiceSettings
from tests.helpers.system import REDIS_URL

AT_ONCE_S = 1.0


def content(n: int, size: int = 100) -> dict:
    return {"type": "content", "n": n, "text": "x" * size}


def end() -> dict:
    return {"type": "run_end", "status": "done"}


async def kept(log: MemoryEventLog, run_id: str) -> list:
    """The ``n`` of each event the log still holds for a finished run."""
    async with asyncio.timeout(AT_ONCE_S):
        return [data.get("n") async for _, data in log.read(run_id)]


async def test_past_max_bytes_the_oldest_finished_runs_go_first():
    log = MemoryEventLog(max_bytes=2_500)
    for run_id in ("old", "newer", "running"):
        await log.open(run_id, "t1")
        for n in range(5):
            await log.append(run_id, content(n))
        if run_id != "running":
            await log.append(run_id, end())
    await log.append("running", content(5, size=800))

    assert await log.thread_of("old") is None, "dropped: it ended first"
    assert await log.thread_of("newer") == "t1" and await log.thread_of("running") == "t1"
    assert await kept(log, "newer") == [0, 1, 2, 3, 4, None]
    assert log._bytes == sum(len(text) for r in log._runs.values() for _, _, text in r.events) <= 2_500


async def test_a_running_run_is_never_dropped_the_largest_loses_its_oldest_events():
    log = MemoryEventLog(max_bytes=1_500)
    await log.open("small", "t1")
    await log.append("small", content(0))
    await log.open("large", "t2")
    for n in range(20):
        await log.append("large", content(n))
    await log.append("small", content(1))

    large = held(log, "large")
    assert held(log, "small") == [0, 1], "the small running run keeps all it has"
    assert 0 < len(large) < 20 and large == list(range(20 - len(large), 20)), "its newest kept"
    assert log._bytes <= 1_500


def held(log: MemoryEventLog, run_id: str) -> list:
    """The ``n`` of each event a running run holds now (``read`` would wait for more)."""
    return [json.loads(text)["n"] for _, _, text in log._runs[run_id].events]


async def test_an_event_larger_than_the_bound_is_kept_alone():
    log = MemoryEventLog(max_bytes=100)
    await log.open("r1", "t1")
    await log.append("r1", content(0, size=50))
    await log.append("r1", content(1, size=500))

    assert held(log, "r1") == [1], "the newest event stays, whatever its size"


async def test_a_reader_at_or_past_the_runs_end_is_done_at_once():
    log = MemoryEventLog()
    await log.open("r1", "t1")
    await log.append("r1", content(0))
    last = await log.append("r1", end())

    async with asyncio.timeout(AT_ONCE_S):
        after_end = [entry async for entry in log.read("r1", after=last)]
        past_end = [entry async for entry in log.read("r1", after="99")]
    assert after_end == [] and past_end == []


async def test_text_with_lone_surrogates_is_encoded_with_replacement_characters():
    text = "pair \ud83d\ude00, lone \ud83d and \udc00"
    encoded = event_json({"type": "content", "text": text, "\ud800key": 1})

    assert json.loads(encoded) == {"type": "content", "text": "pair 😀, lone � and �", "�key": 1}
    log = MemoryEventLog()
    await log.open("r1", "t1")
    await log.append("r1", {"type": "content", "text": text})
    await log.append("r1", end())
    assert [data.get("text") async for _, data in log.read("r1")][0] == "pair 😀, lone � and �"


def test_a_set_is_a_list_and_a_value_json_has_no_type_for_is_text_even_when_str_fails():
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    encoded = event_json({"type": "x", "a": frozenset([1]), "b": Unprintable(), "c": Path("/a")})

    assert json.loads(encoded) == {"type": "x", "a": [1], "b": "<Unprintable>", "c": "/a"}


def test_the_log_is_made_from_the_settings():
    log = event_log(ServiceSettings(run_log_max_bytes=1234, run_log_max_events=7))

    assert isinstance(log, MemoryEventLog) and (log.max_bytes, log.max_events) == (1234, 7)


async def test_what_is_ready_comes_in_one_batch_and_a_waiting_reader_wakes_with_exactly_the_new():
    log = MemoryEventLog()
    await log.open("r1", "t1")
    for n in range(3):
        await log.append("r1", content(n))
    batches = log.read_batches("r1", after="1")
    async with asyncio.timeout(AT_ONCE_S):
        ready = await anext(batches)
        waiting = asyncio.ensure_future(anext(batches))
        other = asyncio.ensure_future(anext(log.read_batches("r1", after="3")))
        while len(log._runs["r1"].waiters) < 2:  # until both wait for the next event
            await asyncio.sleep(0)
        other.cancel()
        await log.append("r1", content(3))
        await log.append("r1", end())
        live = await waiting
        rest = [batch async for batch in batches]

    assert [(cursor, kind, json.loads(text)["n"]) for cursor, kind, text in ready] == [
        ("2", "content", 1), ("3", "content", 2)
    ], "the events after the cursor, as their JSON text"
    assert [(cursor, kind) for cursor, kind, _ in live] == [("4", "content"), ("5", "run_end")], (
        "a cancelled reader does not take the wake-up from another"
    )
    assert rest == [], "done at its run_end"


async def test_redis_batches_carry_each_events_type_and_read_entries_written_without_one(redis_prefix):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    try:
        await log.open("r1", "t1")
        await log.append("r1", content(0))
        await log._redis.xadd(log._events("r1"), {"event": json.dumps(content(1))})  # an earlier version's entry
        await log.append("r1", end())
        await log.append("r1", content(2))  # past the end: no reader gets it
        async with asyncio.timeout(AT_ONCE_S):
            batches = [batch async for batch in log.read_batches("r1")]
            decoded = [data.get("n") async for _, data in log.read("r1")]
    finally:
        await log.close()

    assert [[kind for _, kind, _ in batch] for batch in batches] == [["content", "content", "run_end"]]
    assert decoded == [0, 1, None]


def counting_writes(monkeypatch) -> list[int]:
    """The commands of each write the Redis log's connections make from now on."""
    sizes: list[int] = []
    real = redis_shared.packed

    def counted(commands):
        sizes.append(len(commands))
        return real(commands)

    monkeypatch.setattr(redis_shared, "packed", counted)
    return sizes


async def test_redis_appends_issued_together_go_in_one_write_each_caller_getting_its_own_answer(
    redis_prefix, monkeypatch
):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    try:
        for run_id in ("r1", "r2", "r3"):
            await log.open(run_id, "t1")
        await log.fence("r3", "holder:1")
        sizes = counting_writes(monkeypatch)
        appends = [log.append(run_id, content(n)) for n in range(4) for run_id in ("r1", "r2")]
        appends += [log.append("r3", content(0), token="holder:1"), log.append("r3", content(1), token="other:2")]
        answers = await asyncio.gather(*appends, return_exceptions=True)
        await log.append("r1", end())
        await log.append("r2", end())
        async with asyncio.timeout(AT_ONCE_S):
            read = {run_id: [(cursor, data.get("n")) async for cursor, data in log.read(run_id)]
                    for run_id in ("r1", "r2")}
        r3 = await log._redis.xrange(log._events("r3"))
    finally:
        await log.close()

    assert sizes[0] == len(appends) + 2 * 2, "one pipeline: every append, and 2 EXPIRE for r1 and r2 once each"
    cursors = {"r1": answers[0:8:2], "r2": answers[1:8:2]}
    for run_id in ("r1", "r2"):
        assert [n for _, n in read[run_id]] == [0, 1, 2, 3, None], "each run's order kept"
        assert [cursor for cursor, _ in read[run_id][:4]] == cursors[run_id], "each caller got its own cursor"
    assert isinstance(answers[-1], FencedError) and isinstance(answers[-2], str), "only the fenced-out append fails"
    assert [json.loads(fields["event"])["n"] for _, fields in r3] == [0]


async def test_a_redis_run_renews_its_ttl_at_most_every_renew_s_and_at_its_end(redis_prefix, monkeypatch):
    now = [1_000.0]
    monkeypatch.setattr(event_log_module, "monotonic", lambda: now[0])
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix, retention_s=60)
    keys = (log._events("r1"), log._thread("r1"))

    async def ttls() -> list[int]:
        return [await log._redis.ttl(key) for key in keys]

    async def unexpiring() -> None:
        for key in keys:
            await log._redis.persist(key)

    try:
        await log.open("r1", "t1")
        await log.append("r1", content(0))
        first = await ttls()
        await unexpiring()
        now[0] += RENEW_S / 2
        await log.append("r1", content(1))
        within = await ttls()
        now[0] += RENEW_S / 2
        await log.append("r1", content(2))
        after = await ttls()
        await unexpiring()
        await log.append("r1", end())
        ended = await ttls()
    finally:
        await log.close()

    assert all(0 < ttl <= 60 for ttl in first), "the run's first append in the process renews"
    assert within == [-1, -1], "not again within RENEW_S"
    assert all(0 < ttl <= 60 for ttl in after), (
        "RENEW_S after the last renewal: never more than retention_s from any append, so silence "
        "longer than that loses the events"
    )
    assert all(0 < ttl <= 60 for ttl in ended), "the run's end starts its retention"


async def test_a_reader_joining_the_redis_tail_while_it_blocks_is_served_at_once(redis_prefix):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix, block_ms=60_000)
    try:
        for run_id in ("quiet", "busy"):
            await log.open(run_id, "t1")
        await log.append("busy", content(0))
        quiet = log.read_batches("quiet")
        waiting = asyncio.ensure_future(anext(quiet))
        while log._tail._reading is None:  # until the tail's XREAD is out, blocking on "quiet" only
            await asyncio.sleep(0)
        async with asyncio.timeout(AT_ONCE_S):
            live = log.read_batches("busy")
            first = await anext(live)
            await log.append("busy", content(1))
            second = await anext(live)
            await log.append("quiet", end())
            ended = await waiting
        await quiet.aclose()
        await live.aclose()
    finally:
        await log.close()

    assert [json.loads(text)["n"] for _, _, text in first] == [0], "no wait for the block to time out"
    assert [json.loads(text)["n"] for _, _, text in second] == [1]
    assert [kind for _, kind, _ in ended] == ["run_end"]


async def test_redis_readers_of_one_run_from_different_cursors_each_get_exactly_what_follows_theirs(redis_prefix):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    try:
        await log.open("r1", "t1")
        cursors = [await log.append("r1", content(n)) for n in range(3)]
        live = log.read("r1", after=cursors[-1])
        waiting = asyncio.ensure_future(anext(live))
        while log._tail._reading is None:
            await asyncio.sleep(0)
        async with asyncio.timeout(AT_ONCE_S):
            replaying = log.read("r1", after=cursors[0])
            replay = [(await anext(replaying))[1]["n"] for _ in range(2)]
            await replaying.aclose()
            await log.append("r1", content(3))
            await log.append("r1", end())
            got = [(await waiting)[1].get("n")] + [data.get("n") async for _, data in live]
            joined_late = [data.get("n") async for _, data in log.read("r1", after=cursors[1])]
    finally:
        await log.close()

    assert replay == [1, 2], "a replay from a cursor while a live reader waits on the same run"
    assert got == [3, None], "the live reader: only what followed its cursor"
    assert joined_late == [2, 3, None]


async def test_a_redis_reader_slower_than_the_run_gets_every_event_in_order_in_bounded_batches(redis_prefix):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    try:
        await log.open("r1", "t1")
        await log.append("r1", content(0))
        batches = log.read_batches("r1")
        first = await anext(batches)  # then it takes nothing while the run goes on
        await asyncio.gather(*(log.append("r1", content(n, size=10)) for n in range(1, 3 * BATCH)))
        await log.append("r1", end())
        async with asyncio.timeout(AT_ONCE_S * 5):
            rest = [batch async for batch in batches]
    finally:
        await log.close()

    assert all(len(batch) <= BATCH for batch in rest)
    kinds = [kind for batch in [first, *rest] for _, kind, _ in batch]
    numbers = [json.loads(text)["n"] for batch in [first, *rest] for _, kind, text in batch if kind == "content"]
    assert numbers == list(range(3 * BATCH)) and kinds[-1] == "run_end"


async def test_a_redis_reader_of_a_run_that_is_gone_or_never_was_is_done_after_block_ms(redis_prefix):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix, block_ms=50)
    try:
        await log.open("r1", "t1")
        await log.append("r1", content(0))
        async with asyncio.timeout(AT_ONCE_S):
            never = [batch async for batch in log.read_batches("nothing")]
            reading = log.read_batches("r1")
            got = await anext(reading)
            await log._redis.delete(log._events("r1"), log._thread("r1"))  # as when its TTL runs out
            rest = [batch async for batch in reading]
    finally:
        await log.close()

    assert never == [] and len(got) == 1 and rest == []


@pytest.mark.parametrize("what", ["append", "read"])
async def test_an_unreachable_redis_log_raises_one_line_naming_it(what):
    log = RedisEventLog("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(EventLogUnavailableError) as raised:
            async with asyncio.timeout(AT_ONCE_S * 5):
                if what == "append":
                    await log.append("r1", content(0))
                else:
                    await anext(log.read_batches("r1"))
    finally:
        await log.close()

    assert "Redis at 127.0.0.1:1" in str(raised.value) and "\n" not in str(raised.value)


async def test_a_fenced_append_names_its_script_and_sends_it_only_to_a_redis_without_it(redis_prefix, monkeypatch):
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    sent: list[str] = []
    real = redis_shared.packed

    def noted(commands):
        sent.extend(command[0] for command in commands)
        return real(commands)

    try:
        await log.open("r1", "t1")
        await log.fence("r1", "holder:1")
        await log._redis.script_flush()
        monkeypatch.setattr(redis_shared, "packed", noted)
        first = await log.append("r1", content(0), token="holder:1")
        second = await log.append("r1", content(1), token="holder:1")
        with pytest.raises(FencedError):
            await log.append("r1", content(2), token="other:2")
        kept = [json.loads(fields["event"])["n"] for _, fields in await log._redis.xrange(log._events("r1"))]
    finally:
        await log.close()

    assert sent == ["EVALSHA", "EVAL", "EVALSHA", "EVALSHA"], "the script's text went once, to the Redis without it"
    assert first != second and kept == [0, 1]


def xread_streams(monkeypatch) -> list[list[str]]:
    """The run streams each ``XREAD`` of the tail names from now on (its wake stream left out)."""
    named: list[list[str]] = []
    real = redis_shared.packed

    def noted(commands):
        for command in commands:
            if command[0] == "XREAD":
                keys = command[command.index("STREAMS") + 1 :]
                named.append([key for key in keys[: len(keys) // 2] if ":run:" in key])
        return real(commands)

    monkeypatch.setattr(redis_shared, "packed", noted)
    return named


@pytest.mark.parametrize("fenced", [False, True])
async def test_a_reader_of_a_run_this_process_writes_alone_is_handed_its_appends_not_read_back(
    redis_prefix, monkeypatch, fenced
):
    """A run of this process is written by nothing else: once its reader is caught up, each
    append reaches it as Redis answers the ``XADD``, and no ``XREAD`` asks for that stream again.
    A fenced run may be written by another replica that takes it over: it is always read back."""
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    token = "holder:1" if fenced else None
    try:
        await log.open("r1", "t1")
        if fenced:
            await log.fence("r1", token)
        await log.append("r1", content(0), token=token)
        named = xread_streams(monkeypatch)
        batches = log.read_batches("r1")
        got = []
        async with asyncio.timeout(AT_ONCE_S):
            got += await anext(batches)  # from the XREAD: it joined from the start
            for n in range(1, 6):
                await log.append("r1", content(n), token=token)
                got += await anext(batches)
            await log.append("r1", end(), token=token)
            got += [line async for batch in batches for line in batch]
    finally:
        await log.close()

    assert [json.loads(text).get("n") for _, _, text in got] == [0, 1, 2, 3, 4, 5, None]
    assert len({cursor for cursor, _, _ in got}) == 7
    reads_of_r1 = sum(1 for keys in named if keys)
    if fenced:
        assert reads_of_r1 >= 6, "every entry of a fenced run is read back from Redis"
    else:
        assert reads_of_r1 == 1, "only the first entry, before the reader was caught up"


async def test_an_append_whose_fate_is_unknown_sends_its_readers_back_to_the_xread(redis_prefix, monkeypatch):
    """An append cancelled after its ``XADD`` went out may be in the stream or not: the reader is
    not handed the next append (it would skip that one) but reads the stream from its cursor."""
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    try:
        await log.open("r1", "t1")
        await log.append("r1", content(0))
        batches = log.read_batches("r1")
        async with asyncio.timeout(AT_ONCE_S):
            first = await anext(batches)
            cut = asyncio.ensure_future(log.append("r1", content(1)))
            await asyncio.sleep(0)  # the XADD is queued; the caller stops waiting for its answer
            cut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cut
            await log.append("r1", content(2))
            await log.append("r1", end())
            rest = [line async for batch in batches for line in batch]
    finally:
        await log.close()

    numbers = [json.loads(text).get("n") for _, _, text in first + rest]
    assert numbers == [0, 1, 2, None], "the cancelled caller's entry was made, and read back in its place"


async def test_an_append_in_flight_when_its_connection_is_lost_fails_and_the_next_goes_on_a_new_one(redis_prefix):
    """Redis holds the append (``CLIENT PAUSE WRITE``) while the log's connection is killed: the
    append fails as the log being out of reach, not made, and the run's next append is made."""
    log = RedisEventLog(REDIS_URL, prefix=redis_prefix)
    try:
        await log.open("r1", "t1")
        await log.append("r1", content(0))
        host, port = log._shared._transport.get_extra_info("sockname")
        await log._redis.execute_command("CLIENT", "PAUSE", 5_000, "WRITE")
        try:
            held = asyncio.ensure_future(log.append("r1", content(1)))
            for _ in range(3):
                await asyncio.sleep(0)  # written to the socket
            await log._redis.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
            with pytest.raises(EventLogUnavailableError, match="lost"):
                async with asyncio.timeout(AT_ONCE_S):
                    await held
        finally:
            await log._redis.execute_command("CLIENT", "UNPAUSE")
        async with asyncio.timeout(AT_ONCE_S):
            await log.append("r1", content(2))
            await log.append("r1", end())
            read = [data.get("n") async for _, data in log.read("r1")]
    finally:
        await log.close()

    assert read == [0, 2, None]


def test_commands_are_packed_as_redis_py_packs_them():
    """hiredis packs the log's pipelines: the bytes are redis-py's own, for every kind of
    argument the log sends (text, numbers, bytes, non-ASCII JSON)."""
    from redis.asyncio import Redis

    connection = Redis.from_url(REDIS_URL).connection_pool.make_connection()
    commands = [
        ("XADD", "p:run:r1:events", "MAXLEN", "~", 10_000, "*", "event", event_json({"text": "é\u2603"}), "type", "content"),
        ("EVALSHA", "ab" * 20, 3, "k1", "k2", "k3", "holder:1", "{}", 10_000, 600, 0, "content", 1),
        ("XREAD", "COUNT", BATCH, "BLOCK", 5_000, "STREAMS", "w", "p:run:r1:events", "0-0", "1-0"),
        ("EXPIRE", b"p:run:r1:thread", 600),
    ]

    assert redis_shared.packed(commands) == b"".join(connection.pack_commands(commands))
