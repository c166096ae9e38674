"""Thread operations on real SQLite and PostgreSQL: list, show, fork, delete; and in the CLI."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from typer.testing import CliRunner

from agent_ng.cli.main import app
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.thread_lock import ThreadBusyError, hold_thread
from agent_ng.persistence.threads import (
    ThreadNotFoundError,
    delete_thread,
    fork_thread,
    list_threads,
    show_thread,
    status_of,
    thread_ids,
)
from agent_ng.settings import Settings
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10


def settings() -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="")


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


async def run(graph, input, thread: str) -> list:
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, input, cfg(thread))]


def make_add(log: list):
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        log.append((a, b))
        return a + b

    return add


async def test_list_show_fork_and_delete(checkpoint_url):
    first, second = f"th-{uuid.uuid4().hex}", f"th-{uuid.uuid4().hex}"
    log: list = []
    async with open_checkpointer(checkpoint_url) as saver:
        model = ScriptedModel(
            replies=[
                calls(("add", {"a": 2, "b": 3})), Reply(text="five"),
                Reply(text="hello"),
                Reply(text="and again"),
                Reply(text="forked answer"),
                Reply(text="five, from the fork"),
            ]
        )
        graph = build_graph(model, tools=[make_add(log)], checkpointer=saver, settings=settings())
        await run(graph, {"messages": [HumanMessage("2+3?")]}, first)
        await run(graph, {"messages": [HumanMessage("hi")]}, second)
        await run(graph, {"messages": [HumanMessage("more?")]}, first)

        listed = {i.thread_id: i for i in await list_threads(graph, limit=None)}
        ours = [t for t in await thread_ids(saver) if t in (first, second)]
        assert ours == [first, second], "most recently written first"
        assert listed[first].messages == 6 and listed[first].last_question == "more?"
        assert listed[first].status == "idle" and listed[second].messages == 2

        history = await show_thread(graph, first)
        kinds = [type(m).__name__ for m in history.messages]
        assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "HumanMessage", "AIMessage"]
        assert history.messages[2].text == "5" and history.messages[2].status == "success"
        assert history.checkpoints[0].messages == 6
        assert [c.messages for c in history.checkpoints] == sorted(
            (c.messages for c in history.checkpoints), reverse=True
        ), "newest first"

        at_rest = next(c for c in history.checkpoints if c.messages == 4 and not c.next)
        fork = await fork_thread(graph, first, at_rest.checkpoint_id)
        await run(graph, {"messages": [HumanMessage("forked question")]}, fork)
        assert [m.text for m in model.seen[-1]] == ["2+3?", "", "5", "five", "forked question"]
        assert len((await show_thread(graph, first)).messages) == 6, "the source is untouched"

        asked = next(c for c in history.checkpoints if c.next == ("tools",))
        pending = await fork_thread(graph, first, asked.checkpoint_id, f"{first}-retry")
        assert (await show_thread(graph, pending)).status == "pending"
        events = await run(graph, None, pending)
        assert [e.type for e in events if e.tool_call_id] == ["tool_start", "tool_result", "tool_complete"]
        assert log == [(2, 3), (2, 3)], "the fork ran the unanswered call again"
        assert events[-1].status == "done"

        with pytest.raises(ValueError, match="already exists"):
            await fork_thread(graph, first, None, second)
        with pytest.raises(ThreadNotFoundError):
            await fork_thread(graph, first, "1f000000-0000-6000-8000-000000000000")

        async with hold_thread(graph, second):
            with pytest.raises(ThreadBusyError):
                await delete_thread(graph, second)
        await delete_thread(graph, second)
        assert second not in await thread_ids(saver)
        with pytest.raises(ThreadNotFoundError):
            await show_thread(graph, second)
        with pytest.raises(ThreadNotFoundError):
            await delete_thread(graph, second)
        for thread in (first, fork, pending):
            await delete_thread(graph, thread)


def test_the_threads_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_CHECKPOINT_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    runner = CliRunner()

    asked = runner.invoke(app, ["ask", "what is 17*23?", "--thread", "demo"])
    assert asked.exit_code == 0, asked.output
    listed = runner.invoke(app, ["threads", "list"])
    assert listed.exit_code == 0 and "demo" in listed.output and "17*23" in listed.output

    shown = runner.invoke(app, ["threads", "show", "demo"])
    assert shown.exit_code == 0, shown.output
    assert "calls calculator" in shown.output and "391" in shown.output

    forked = runner.invoke(app, ["threads", "fork", "demo", "--to", "demo-2"])
    assert forked.exit_code == 0 and "demo-2" in forked.output
    again = runner.invoke(app, ["ask", "what did I ask before?", "--thread", "demo-2"])
    assert "17*23" in again.output

    refused = runner.invoke(app, ["threads", "fork", "demo", "--to", "demo-2"])
    assert refused.exit_code == 1 and "already exists" in refused.output

    deleted = runner.invoke(app, ["threads", "delete", "demo", "--yes"])
    assert deleted.exit_code == 0
    missing = runner.invoke(app, ["threads", "show", "demo"])
    assert missing.exit_code == 1 and "no thread 'demo'" in missing.output
    assert "demo-2" in runner.invoke(app, ["threads", "list"]).output

    nothing = runner.invoke(app, ["resume", "--thread", "demo-2"])
    assert nothing.exit_code == 0 and "nothing to resume" in nothing.output


def test_resume_in_the_cli_finishes_a_run_that_stopped_mid_step(tmp_path, monkeypatch):
    """A run abandoned once its tool calls were made (here: cut off outside ``stream``, as a
    crash leaves it; a stopped ``stream`` settles the thread instead) is finished by
    ``agent-ng resume``; the crash across processes is in test_crash_resume."""
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    monkeypatch.setenv("AGENT_CHECKPOINT_URL", url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    async def start_and_abandon():
        async with open_checkpointer(url) as saver:
            graph = build_graph(checkpointer=saver, settings=Settings(checkpoint_url=url))
            parts = graph.astream(
                {"messages": [HumanMessage("what is 6*7?")]}, cfg("stopped"), stream_mode="updates"
            )
            async for update in parts:
                if "llm" in update:
                    break
            await parts.aclose()
            return status_of(await graph.aget_state(cfg("stopped")))

    assert asyncio.run(start_and_abandon()) == "pending"
    refused = CliRunner().invoke(app, ["ask", "something else", "--thread", "stopped"])
    assert refused.exit_code == 1 and "agent-ng resume --thread stopped" in refused.output
    resumed = CliRunner().invoke(app, ["resume", "--thread", "stopped"])
    assert resumed.exit_code == 0, resumed.output
    assert "42" in resumed.output
    unknown = CliRunner().invoke(app, ["resume", "--thread", "no-such-thread"])
    assert unknown.exit_code != 0 and "no thread" in unknown.output
