"""The in-process event log's bounds, end and batches, Redis's batches, and the one encoder every event goes through."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent_ng.service.event_log import MemoryEventLog, RedisEventLog, event_json, event_log
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
