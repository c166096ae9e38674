"""Write turns on one SQLite file between real processes: a turn another process holds is waited
for off the loop and taken as it is let go; a wait cancelled gives back the turn it then gets;
the saver ``open_checkpointer`` gives writes its checkpoints only in its turn, and its connection's
thread gives the turn back as the commit ends."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import threading
import time
from pathlib import Path

from langgraph.checkpoint.base import empty_checkpoint

from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.sqlite_turns import WriteTurns

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
fcntl.flock(fd, fcntl.LOCK_UN)
print("let go", flush=True)
sys.stdin.readline()
"""
GUARD_S = 10.0
WRITE_S = 1.0


async def holder(path: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert await process.stdout.readline() == b"held\n"
    return process


async def let_go(process: asyncio.subprocess.Process) -> None:
    process.stdin.write(b"\n")
    assert await process.stdout.readline() == b"let go\n"


def free(path: Path) -> bool:
    """Whether another opener of ``path`` could take the turn now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


async def test_a_turn_another_process_holds_is_waited_for_and_taken_as_it_is_let_go(tmp_path):
    path = tmp_path / "db.writes.lock"
    turns = WriteTurns(path)
    other = await holder(path)
    ticks = 0
    entered = asyncio.Event()

    async def write() -> None:
        async with turns.turn():
            entered.set()
            await asyncio.sleep(0)
            assert not free(path), "while this process writes, no other may"

    try:
        writing = asyncio.ensure_future(write())
        for _ in range(100):  # the loop goes on while the turn is waited for
            await asyncio.sleep(0)
            ticks += 1
        assert not entered.is_set(), "no turn while the other process holds it"
        await let_go(other)
        async with asyncio.timeout(GUARD_S):
            await writing
    finally:
        other.stdin.close()
        await other.wait()
        turns.close()

    assert ticks == 100 and entered.is_set()
    assert free(path), "let go at the end of the turn"


async def test_a_wait_cancelled_gives_back_the_turn_its_thread_then_takes(tmp_path):
    path = tmp_path / "db.writes.lock"
    turns = WriteTurns(path)
    other = await holder(path)
    entered = False

    async def write() -> None:
        nonlocal entered
        async with turns.turn():
            entered = True

    try:
        waiting = asyncio.ensure_future(write())
        for _ in range(3):  # to the wait in its worker thread
            await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert waiting.cancelled() and not entered
        await let_go(other)
        async with asyncio.timeout(GUARD_S):
            while not free(path):  # the worker thread takes the turn, then gives it back
                await asyncio.sleep(0.01)
    finally:
        other.stdin.close()
        await other.wait()
        turns.close()


async def test_the_sqlite_saver_writes_a_checkpoint_only_in_its_turn(tmp_path):
    database = tmp_path / "agent.db"
    config = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
    async with open_checkpointer(f"sqlite:///{database}") as saver:
        other = await holder(Path(f"{database}.writes.lock"))
        try:
            putting = asyncio.ensure_future(saver.aput(config, empty_checkpoint(), {}, {}))
            await asyncio.wait([putting], timeout=WRITE_S)  # time enough to write, had it been its turn
            assert not putting.done(), "written while another process had the turn"
            await let_go(other)
            async with asyncio.timeout(GUARD_S):
                stored = await putting
        finally:
            other.stdin.close()
            await other.wait()
        assert (await saver.aget_tuple(stored)) is not None


WAITER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
print("ready", flush=True)
sys.stdin.readline()
fcntl.flock(fd, fcntl.LOCK_EX)
print(time.monotonic(), flush=True)
"""
LOOP_BLOCKED_S = 0.6


async def held_thread(saver) -> threading.Event:
    """The saver's connection thread kept busy by a call queued first, until the event is set:
    a write's trip then waits in its queue."""
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(GUARD_S)

    asyncio.ensure_future(saver.conn._execute(hold))
    assert await asyncio.to_thread(holding.wait, GUARD_S)
    return release


async def taken_by_the_saver(putting: asyncio.Future, path: Path) -> None:
    """Until the saver holds the turn: its commit's trip is queued in the same step."""
    async with asyncio.timeout(GUARD_S):
        while free(path):
            assert not putting.done()
            await asyncio.sleep(0)


async def test_the_sqlite_saver_gives_its_turn_back_as_its_commit_ends_not_when_its_loop_gets_round_to_it(tmp_path):
    """Another process waiting for the turn gets it while this process's event loop is still
    blocked: the connection's thread let it go after the commit (before: only once the loop
    resumed the writer, so a busy loop held every other process's writes up)."""
    database = tmp_path / "agent.db"
    path = Path(f"{database}.writes.lock")
    config = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
    async with open_checkpointer(f"sqlite:///{database}") as saver:
        waiter = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WAITER, str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert await waiter.stdout.readline() == b"ready\n"
            release = await held_thread(saver)
            putting = asyncio.ensure_future(saver.aput(config, empty_checkpoint(), {}, {}))
            await taken_by_the_saver(putting, path)
            waiter.stdin.write(b"\n")
            release.set()
            blocked_at = time.monotonic()
            time.sleep(LOOP_BLOCKED_S)  # the loop is busy: nothing of this process's tasks runs
            async with asyncio.timeout(GUARD_S):
                taken_at = float(await waiter.stdout.readline())
                stored = await putting
        finally:
            waiter.stdin.close()
            await waiter.wait()
        assert (await saver.aget_tuple(stored)) is not None
    assert taken_at - blocked_at < LOOP_BLOCKED_S / 2, "the other process got the turn while the loop was blocked"


async def test_a_write_stopped_while_its_commit_is_queued_is_committed_and_gives_its_turn_back(tmp_path):
    database = tmp_path / "agent.db"
    path = Path(f"{database}.writes.lock")
    config = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    async with open_checkpointer(f"sqlite:///{database}") as saver:
        release = await held_thread(saver)
        putting = asyncio.ensure_future(saver.aput(config, checkpoint, {}, {}))
        await taken_by_the_saver(putting, path)
        putting.cancel()
        await asyncio.gather(putting, return_exceptions=True)
        assert putting.cancelled() and not free(path), "the turn is the queued trip's"
        release.set()
        async with asyncio.timeout(GUARD_S):
            while not free(path):
                await asyncio.sleep(0.01)
        stored = await saver.aget_tuple(config)
    assert stored is not None and stored.checkpoint["id"] == checkpoint["id"]
