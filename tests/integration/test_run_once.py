"""A tool call runs at most once once its result is recorded (``agent_ng.engine.recorded_results``).

In process: a result recorded but lost before LangGraph stored it (a kill between the two, or
the pending-writes race of langgraph #8039) is returned on resume instead of running the call
again, on every tool store. Across processes: a run with four parallel tools is killed with
SIGKILL at drawn moments, several times, and resumed each time; the tools' own log shows that
no call started again after its result was recorded.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import uuid
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.engine.tool_calls import notes
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.nodes.history import is_valid
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.threads import show_thread
from agent_ng.settings import Settings
from tests.helpers.paths import REPO
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.tool_stores import KINDS, open_test_store

GUARD_S = 60
KILLS = 4


class LosesToolWrites(InMemorySaver):
    """A saver that drops the tools' pending writes while ``losing``: what a process killed
    after the tool returned, before LangGraph stored its result, leaves behind."""

    losing = True

    async def aput_writes(self, config, writes, task_id, task_path=""):
        if self.losing and any(channel == "messages" for channel, _ in writes):
            return
        await super().aput_writes(config, writes, task_id, task_path)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_recorded_result_is_returned_instead_of_running_the_call_again(kind, tmp_path):
    runs: list[int] = []
    stopped = asyncio.Event()

    @tool
    async def pay(amount: int) -> str:
        """Pays once."""
        runs.append(amount)
        return f"paid {amount}"

    @tool
    async def wait() -> str:
        """Waits until the run is stopped."""
        await stopped.wait()
        return "never"

    saver = LosesToolWrites()
    config = {"configurable": {"thread_id": f"pay-{uuid.uuid4().hex}"}}
    async with open_test_store(kind, tmp_path) as store:
        model = ScriptedModel(replies=[calls(("pay", {"amount": 5}), ("wait", {})), Reply(text="paid")])
        graph = build_graph(model, tools=[pay, wait], checkpointer=saver, settings=Settings(system_prompt=""), tool_store=store)

        record, recorded = store.record_result, asyncio.Event()

        async def record_result(key, message, now):
            await record(key, message, now)
            recorded.set()

        store.record_result = record_result
        task = asyncio.create_task(
            graph.ainvoke({"messages": [HumanMessage("pay 5")]}, config, durability="sync")
        )
        async with asyncio.timeout(10):
            await recorded.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert runs == [5]
        state = await graph.aget_state(config)
        assert "tools" in state.next and not any(t.result for t in state.tasks), "the result was lost"

        saver.losing = False
        stopped.set()
        async with asyncio.timeout(10):
            events = [e async for e in stream(graph, None, config)]

    assert runs == [5], "the payment ran once"
    assert events[-1].status == "done"
    starts = {e.name: e for e in events if e.type == "tool_start"}
    assert starts["pay"].cached is True and starts["wait"].cached is False
    messages = (await graph.aget_state(config)).values["messages"]
    paid = next(m for m in messages if isinstance(m, ToolMessage) and m.name == "pay")
    assert paid.text == "paid 5" and notes(paid).get("replayed") is True
    assert is_valid(messages)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_result_is_reported_only_once_it_is_recorded(kind, tmp_path):
    """A client that saw a call's ``tool_result`` and then lost the process (kill -9) must not see
    the call run again: the record is committed before the result is reported."""
    release = asyncio.Event()

    @tool
    async def pay(amount: int) -> str:
        """Pays once."""
        return f"paid {amount}"

    config = {"configurable": {"thread_id": f"pay-{uuid.uuid4().hex}"}}
    async with open_test_store(kind, tmp_path) as store:
        model = ScriptedModel(replies=[calls(("pay", {"amount": 5})), Reply(text="paid")])
        graph = build_graph(model, tools=[pay], checkpointer=InMemorySaver(), settings=Settings(system_prompt=""),
                            tool_store=store)
        record, recording = store.record_result, asyncio.Event()

        async def record_result(key, message, now):
            recording.set()
            await release.wait()
            await record(key, message, now)

        store.record_result = record_result
        seen: list[str] = []

        async def read() -> None:
            async for event in stream(graph, {"messages": [HumanMessage("pay 5")]}, config):
                seen.append(event.type)

        reader = asyncio.create_task(read())
        async with asyncio.timeout(10):
            await recording.wait()
            await asyncio.sleep(0.05)  # time for a tool_result the engine sent too early to reach the reader
            held = list(seen)
            release.set()
            await reader

    assert "tool_start" in held and "tool_result" not in held, held
    assert seen.index("tool_result") < seen.index("tool_complete") and seen[-1] == "run_end"


async def test_without_a_thread_nothing_is_recorded(tmp_path):
    async with open_test_store("memory", tmp_path) as store:
        @tool
        async def pay(amount: int) -> str:
            """Pays."""
            return f"paid {amount}"

        model = ScriptedModel(replies=[calls(("pay", {"amount": 1})), Reply(text="ok")])
        graph = build_graph(model, tools=[pay], settings=Settings(system_prompt=""), tool_store=store)
        await graph.ainvoke({"messages": [HumanMessage("pay")]})
        assert not store._results


async def child(url: str, store_url: str, thread: str, log: Path, seed: int, mode: str, stderr: Path):
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.kill_child", url, store_url, thread, str(log), str(seed), mode,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=stderr.open("a"),
    )


async def kill_until_done(start, draw: random.Random, log: Path, stderr: Path) -> int:
    """Start the run, SIGKILL it after a drawn number of its lines, resume, up to ``KILLS``
    times; then resume until it is done. Returns the number of kills."""
    kills, mode = 0, "run"
    while True:
        process = await start(mode, draw.randrange(1 << 30))
        kill_after = draw.randint(1, 7) if kills < KILLS else None  # a whole run prints 8 lines
        seen = 0
        try:
            while line := (await process.stdout.readline()).decode():
                if line.startswith("run_end"):
                    assert line.split()[1] == "done", line
                    await process.wait()
                    return kills
                seen += line.startswith(("start", "recorded"))
                if kill_after is not None and seen >= kill_after and "start" in log.read_text():
                    process.send_signal(signal.SIGKILL)
                    kills += 1
                    break
            assert await process.wait() == -signal.SIGKILL, stderr.read_text()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        mode = "resume"


async def test_repeated_sigkill_never_runs_a_recorded_call_twice(checkpoint_url, tmp_path):
    thread = f"kill-{uuid.uuid4().hex}"
    store_url = f"sqlite:///{tmp_path / 'tool_engine.db'}"
    log = tmp_path / "side_effects.log"
    stderr = tmp_path / "stderr.log"
    seed = random.randrange(1 << 30)

    def start(mode: str, child_seed: int):
        return child(checkpoint_url, store_url, thread, log, child_seed, mode, stderr)

    async with asyncio.timeout(GUARD_S):
        kills = await kill_until_done(start, random.Random(seed), log, stderr)

    assert kills >= 1
    lines = [line.split() for line in log.read_text().splitlines()]
    recorded: set[str] = set()
    for what, call_id in lines:
        if what == "recorded":
            recorded.add(call_id)
        elif what == "start":
            assert call_id not in recorded, f"{call_id} ran again after its result was recorded (seed {seed}): {lines}"
    calls = {call_id for _, call_id in lines}
    assert len(calls) == 4
    assert all({("recorded", c), ("replayed", c)} & {tuple(line) for line in lines} for c in calls), lines

    async with open_checkpointer(checkpoint_url) as saver:
        graph = build_graph(ScriptedModel(replies=[]), tools=[], checkpointer=saver, settings=Settings(system_prompt=""))
        history = await show_thread(graph, thread)
        await saver.adelete_thread(thread)
    results = [m for m in history.messages if isinstance(m, ToolMessage)]
    assert sorted(m.text for m in results) == [f"part {i} done" for i in range(4)], f"seed {seed}"
    assert is_valid(history.messages) and history.status == "idle"
