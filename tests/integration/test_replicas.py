"""Two processes (two replicas, each with its own checkpointer and pool) take turns on one thread,
and a run on a thread another process is writing is refused with ``ThreadBusyError``."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from langchain_core.messages import HumanMessage

from agent_ng.graph.agent import build_graph
from agent_ng.models.offline import OfflineChatModel
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.thread_lock import hold_thread
from tests.helpers.paths import REPO

GUARD_S = 30


class Replica:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, thread: str, stderr: Path) -> Replica:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.helpers.replica_child", url, thread,
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=stderr.open("w"),
        )
        return cls(process)

    async def line(self) -> str:
        line = (await self.process.stdout.readline()).decode()
        assert line, "the replica exited"
        return line.strip()

    async def turn(self, question: str) -> str:
        self.process.stdin.write(question.encode() + b"\n")
        await self.process.stdin.drain()
        return await self.line()

    async def stop(self) -> int:
        self.process.stdin.close()
        return await self.process.wait()


async def test_two_replicas_take_turns_on_one_thread(checkpoint_url, tmp_path):
    thread = f"replicas-{uuid.uuid4().hex}"
    async with asyncio.timeout(GUARD_S):
        a, b = await asyncio.gather(
            Replica.start(checkpoint_url, thread, tmp_path / "a.err"),
            Replica.start(checkpoint_url, thread, tmp_path / "b.err"),
        )
        assert [await a.line(), await b.line()] == ["ready", "ready"]

        assert (await a.turn("what is 17*23?")).startswith("turn done")
        assert "25" in await b.turn("how many primes are below 100?")
        recalled = await a.turn("what did I ask before?")
        assert "17*23" in recalled and "primes are below 100" in recalled, recalled

        async with open_checkpointer(checkpoint_url) as saver:
            graph = build_graph(OfflineChatModel(), tools=[], checkpointer=saver)
            async with hold_thread(graph, thread):
                refused = await b.turn("what is 1+1?")
            assert refused.startswith("turn error ThreadBusyError") and "is busy" in refused
            assert (await b.turn("what is 1+1?")).startswith("turn done")
            state = await graph.aget_state({"configurable": {"thread_id": thread}})
            await saver.adelete_thread(thread)

        assert await a.stop() == 0 and await b.stop() == 0
    questions = [m.text for m in state.values["messages"] if isinstance(m, HumanMessage)]
    assert questions == [
        "what is 17*23?", "how many primes are below 100?", "what did I ask before?", "what is 1+1?"
    ], "every turn once, in order; the refused run wrote nothing"
