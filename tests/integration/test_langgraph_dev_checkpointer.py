"""``langgraph dev`` on our checkpointer (``langgraph.json``'s ``checkpointer``): a conversation is
one thread whether ``langgraph dev`` (through ``langgraph_sdk``) or ``agent-ng ask`` continues it.

Each test runs the real ``langgraph dev`` (``tests.helpers.langgraph_dev``) and the real
``agent-ng`` command on one SQLite file (``AGENT_CHECKPOINT_URL``), offline, and reads the
thread back with our own code (``show_thread`` over ``open_checkpointer``). ``langgraph dev``
keeps its own thread records in ``.langgraph_api/`` of its working directory; the restart tests
show what a thread needs when those records are kept, and when they are gone. A rollback
deletes one run's checkpoints from our file (``agent_ng.persistence.run_deletion``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

from agent_ng.cli.main import new_thread_id
from agent_ng.graph.agent import build_graph
from agent_ng.models.offline import OfflineChatModel
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.thread_lock import locks_of
from agent_ng.persistence.threads import ThreadHistory, ThreadNotFoundError, show_thread
from tests.helpers.langgraph_dev import langgraph_dev
from tests.helpers.langgraph_traffic import LONG
from tests.helpers.paths import REPO

RUN_GUARD_S = 30
QUESTION = "what is 17*23?"
FIRST_TURN = ["human", "ai", "tool", "ai"]
RECALL = "what did I ask before?"
RECALLED = f'Earlier you asked: "{QUESTION}".'


def database(tmp_path: Path) -> dict[str, str]:
    return {"AGENT_CHECKPOINT_URL": f"sqlite:///{tmp_path / 'agent.db'}", "AGENT_DATA_DIR": str(tmp_path)}


def agent_ng_ask(tmp_path: Path, thread_id: str, question: str) -> subprocess.CompletedProcess[str]:
    """``agent-ng ask --thread`` in its own process, on the same database, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_"))}
    return subprocess.run(
        [str(Path(sys.executable).parent / "agent-ng"), "ask", "--thread", thread_id, question],
        cwd=REPO, env=env | database(tmp_path), capture_output=True, text=True, timeout=120,
    )


async def stored(tmp_path: Path, thread_id: str) -> ThreadHistory:
    """The thread as our own code reads it from the SQLite file."""
    async with open_checkpointer(database(tmp_path)["AGENT_CHECKPOINT_URL"]) as saver:
        return await show_thread(build_graph(OfflineChatModel(), checkpointer=saver), thread_id)


async def ask_through_sdk(url: str, thread_id: str, question: str) -> dict:
    client = get_client(url=url)
    async with asyncio.timeout(RUN_GUARD_S):
        return await client.runs.wait(
            thread_id, "agent", input={"messages": [{"role": "user", "content": question}]}
        )


async def state_messages(url: str, thread_id: str) -> list[dict]:
    return (await get_client(url=url).threads.get_state(thread_id))["values"].get("messages", [])


def kinds(messages: list) -> list[str]:
    return [m["type"] if isinstance(m, dict) else m.type for m in messages]


async def test_a_run_made_through_langgraph_sdk_lands_in_our_sqlite_file_and_agent_ng_ask_continues_it(tmp_path):
    with langgraph_dev(tmp_path, **database(tmp_path)) as url:
        thread_id = (await get_client(url=url).threads.create())["thread_id"]
        result = await ask_through_sdk(url, thread_id, QUESTION)
        assert kinds(result["messages"]) == FIRST_TURN

        history = await stored(tmp_path, thread_id)
        assert kinds(history.messages) == FIRST_TURN
        assert history.messages[-1].text == "17*23 = 391." and history.status == "idle"

        done = agent_ng_ask(tmp_path, thread_id, RECALL)
        assert done.returncode == 0, done.stderr
        assert RECALLED in done.stdout

        both_turns = [*FIRST_TURN, "human", "ai"]
        assert kinds((await stored(tmp_path, thread_id)).messages) == both_turns
        messages = await state_messages(url, thread_id)
        assert kinds(messages) == both_turns, "the running langgraph dev reads what agent-ng wrote"
        assert messages[-1]["content"] == RECALLED


async def test_a_thread_survives_a_restart_that_keeps_langgraph_devs_records(tmp_path):
    with langgraph_dev(tmp_path, **database(tmp_path)) as url:
        thread_id = (await get_client(url=url).threads.create())["thread_id"]
        await ask_through_sdk(url, thread_id, QUESTION)

    with langgraph_dev(tmp_path, **database(tmp_path)) as url:
        assert kinds(await state_messages(url, thread_id)) == FIRST_TURN
        again = await ask_through_sdk(url, thread_id, RECALL)

    assert again["messages"][-1]["content"] == RECALLED
    assert kinds((await stored(tmp_path, thread_id)).messages) == [*FIRST_TURN, "human", "ai"]


async def test_after_a_restart_without_its_records_langgraph_dev_finds_the_thread_once_its_record_names_the_graph(
    tmp_path,
):
    """A fresh working directory is a langgraph dev without records: the checkpoints are all in
    our file, but its state route answers 404 until the thread's record exists again, and an
    empty state until that record names the graph (``graph_id``) that reads the checkpoints."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with langgraph_dev(first, **database(tmp_path)) as url:
        thread_id = (await get_client(url=url).threads.create())["thread_id"]
        await ask_through_sdk(url, thread_id, QUESTION)

    with langgraph_dev(second, **database(tmp_path)) as url:
        client = get_client(url=url)
        with pytest.raises(httpx.HTTPStatusError) as missing:
            await client.threads.get_state(thread_id)
        assert missing.value.response.status_code == 404

        await client.threads.create(thread_id=thread_id, if_exists="do_nothing")
        assert (await client.threads.get_state(thread_id))["values"] == {}
        await client.threads.update(thread_id, metadata={"graph_id": "agent"})
        assert kinds(await state_messages(url, thread_id)) == FIRST_TURN


async def test_a_thread_started_with_agent_ng_ask_is_read_and_continued_through_langgraph_dev(tmp_path):
    """langgraph dev takes only UUIDs as thread ids, so the thread is started with one
    (``agent-ng ask`` alone makes a short id, which langgraph dev refuses)."""
    thread_id = str(uuid.uuid4())
    done = agent_ng_ask(tmp_path, thread_id, QUESTION)
    assert done.returncode == 0, done.stderr

    with langgraph_dev(tmp_path, **database(tmp_path)) as url:
        client = get_client(url=url)
        with pytest.raises(httpx.HTTPStatusError) as short:
            await client.threads.create(thread_id=new_thread_id(), if_exists="do_nothing", graph_id="agent")
        assert short.value.response.status_code == 422

        await client.threads.create(thread_id=thread_id, if_exists="do_nothing", graph_id="agent")
        messages = await state_messages(url, thread_id)
        assert kinds(messages) == FIRST_TURN and messages[-1]["content"] == "17*23 = 391."

        again = await ask_through_sdk(url, thread_id, RECALL)

    assert again["messages"][-1]["content"] == RECALLED
    assert kinds((await stored(tmp_path, thread_id)).messages) == [*FIRST_TURN, "human", "ai"]


async def test_a_langgraph_dev_run_on_a_thread_another_process_is_running_is_refused_and_writes_nothing(tmp_path):
    """langgraph dev's runs hold our thread locks (``agent_ng.graph.studio``): while this
    process holds the thread, as an ``agent-ng ask`` or ``agent-ng serve`` run would, a run through
    langgraph dev ends in ``ThreadBusyError``; once it is free, the same run goes through."""
    with langgraph_dev(tmp_path, **database(tmp_path)) as url:
        client = get_client(url=url)
        thread_id = (await client.threads.create())["thread_id"]
        async with open_checkpointer(database(tmp_path)["AGENT_CHECKPOINT_URL"]) as saver:
            async with locks_of(saver).hold(thread_id):
                with pytest.raises(Exception, match=r"ThreadBusyError: thread .* is busy"):
                    await ask_through_sdk(url, thread_id, QUESTION)
                run = (await client.runs.list(thread_id))[0]
            with pytest.raises(ThreadNotFoundError):
                await stored(tmp_path, thread_id)
        answered = await ask_through_sdk(url, thread_id, QUESTION)

    assert run["status"] == "error"
    assert kinds(answered["messages"]) == FIRST_TURN
    assert kinds((await stored(tmp_path, thread_id)).messages) == FIRST_TURN


async def test_langgraph_dev_rolls_a_busy_run_back_out_of_our_sqlite_file(tmp_path):
    """``multitask_strategy="rollback"`` has langgraph dev call our saver's ``adelete_for_runs``:
    the busy run's checkpoints leave our file, and the next run goes on from the thread before it
    (it recalls the question asked before the rolled-back one)."""
    with langgraph_dev(tmp_path, **database(tmp_path)) as url:
        client = get_client(url=url)
        thread_id = (await client.threads.create())["thread_id"]
        await ask_through_sdk(url, thread_id, QUESTION)
        busy = await client.runs.create(thread_id, "agent", input={"messages": [{"role": "user", "content": LONG}]},
                                        stream_mode=["custom"], stream_resumable=True)
        async with asyncio.timeout(RUN_GUARD_S):
            async for part in client.runs.join_stream(thread_id, busy["run_id"], last_event_id="-1"):
                if part.event == "custom" and part.data.get("agent_ng") == "tool_progress":
                    break
            second = await client.runs.create(thread_id, "agent", multitask_strategy="rollback",
                                              input={"messages": [{"role": "user", "content": RECALL}]})
            answered = await client.runs.join(thread_id, second["run_id"])
        with pytest.raises(httpx.HTTPStatusError) as gone:
            await client.runs.get(thread_id, busy["run_id"])

    assert gone.value.response.status_code == 404, "langgraph dev deletes a rolled-back run"
    assert answered["messages"][-1]["content"] == RECALLED
    history = await stored(tmp_path, thread_id)
    assert kinds(history.messages) == [*FIRST_TURN, "human", "ai"] and LONG not in {m.text for m in history.messages}
