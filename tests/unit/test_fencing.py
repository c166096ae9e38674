"""The replica's id, the fence in the context, the in-process event log's fence, and
``ThreadLocks.free`` in one process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from time import monotonic

import pytest

from agent_ng.persistence.fencing import FENCE, Fence, FencedError, fenced
from agent_ng.persistence.replica import REPLICA_ID
from agent_ng.persistence.run_table import application_name_of
from agent_ng.persistence.thread_lock import ThreadLocks
from agent_ng.service.event_log import MemoryEventLog

GUARD_S = 10


def test_each_process_start_is_a_replica_of_its_own_whose_id_fits_an_application_name():
    show = "from agent_ng.persistence.replica import REPLICA_ID; print(REPLICA_ID)"
    others = {subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, check=True).stdout.strip()
              for _ in range(2)}

    assert len(others | {REPLICA_ID}) == 3
    assert all(re.fullmatch(r"[^:]{1,24}:\d+:[0-9a-f]{6}", replica) for replica in others | {REPLICA_ID})
    assert application_name_of(REPLICA_ID) == f"agent-ng {REPLICA_ID}", "whole, so evicting it ends only its own"


async def test_a_fence_holds_in_its_context_and_the_tasks_started_there_only():
    fence = Fence("r1", "replica-a", 2)

    async def seen() -> Fence | None:
        return FENCE.get()

    with fenced(fence) as given:
        inside = asyncio.create_task(seen())
        assert given is fence and FENCE.get() == fence
        with fenced(Fence("r1", "replica-b", 3)):
            assert FENCE.get().holder == "replica-b"
        assert FENCE.get() == fence
    outside = asyncio.create_task(seen())

    assert await inside == fence and await outside is None and FENCE.get() is None


def test_a_fenced_error_says_which_run_and_attempt_and_that_nothing_was_written():
    assert str(FencedError("r1", 3)) == (
        "run r1 was taken over by another replica (attempt 3 is no longer its holder's); nothing was written"
    )
    assert "(this attempt is no longer" in str(FencedError("r1"))


async def test_the_memory_log_takes_an_append_with_a_token_only_from_the_runs_holder():
    log = MemoryEventLog()
    await log.open("r1", "t1")
    with pytest.raises(FencedError):
        await log.append("r1", {"type": "content", "n": 0}, token="a:1")
    await log.fence("r1", "a:1")
    await log.append("r1", {"type": "content", "n": 1}, token="a:1")
    await log.append("r1", {"type": "content", "n": 2})
    await log.fence("r1", "b:2")
    with pytest.raises(FencedError, match="run r1 was taken over"):
        await log.append("r1", {"type": "content", "n": 3}, token="a:1")
    await log.append("r1", {"type": "content", "n": 4}, token="b:2")
    await log.fence("r1", None)
    for token in ("a:1", "b:2"):
        with pytest.raises(FencedError):
            await log.append("r1", {"type": "content", "n": 5}, token=token)
    await log.append("r1", {"type": "run_end", "status": "done"})

    async with asyncio.timeout(1):
        assert [data.get("n") async for _, data in log.read("r1")] == [1, 2, 4, None]


async def test_a_thread_held_in_this_process_is_free_once_its_run_lets_it_go():
    locks = ThreadLocks()
    entered, leave = asyncio.Event(), asyncio.Event()

    async def run() -> float:
        async with locks.hold("t1"):
            entered.set()
            await leave.wait()
        return monotonic()

    async with asyncio.timeout(GUARD_S):
        holding = asyncio.create_task(run())
        await entered.wait()
        started = monotonic()
        assert not await locks.free("t1", within_s=0.1)
        assert monotonic() - started >= 0.1
        assert await locks.free("t2", within_s=0)

        waiting = asyncio.create_task(locks.free("t1", within_s=GUARD_S))
        await asyncio.sleep(0)
        assert not waiting.done()
        leave.set()
        assert await waiting and monotonic() >= await holding
        async with locks.hold("t1"):
            pass
