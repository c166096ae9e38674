"""The LangGraph Server API's threads and assistants under ``/langgraph``, driven by the unmodified
``langgraph_sdk`` clients (async and sync) against the real service, on SQLite and PostgreSQL.

Runs are made with the native route (``POST /threads/{id}/runs/stream``) or ``stream`` on a graph
of the test's own, as ``agent-ng ask`` makes them. What ``langgraph dev`` would answer comes from
its own code: a ``ThreadState`` is compared with ``langgraph_api.state.state_snapshot_to_thread_state``
of the same checkpoint, encoded by ``langgraph_api.serde``. Threads of a test carry a marker of
their own in their metadata, since the PostgreSQL database is shared.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
import orjson
import pytest
from langchain_core.tools import tool
from langgraph.pregel.remote import RemoteGraph
from langgraph_api.serde import json_dumpb
from langgraph_api.state import state_snapshot_to_thread_state
from langgraph_sdk import get_client, get_sync_client

from agent_ng import configure
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention, prune
from agent_ng.persistence.thread_records import NAMESPACE, ensure_thread, get_record, record_config, thread_exists
from agent_ng.persistence.threads import list_threads, thread_config, thread_ids
from agent_ng.service.app import create_app
from agent_ng.service.langgraph_server.assistants import ASSISTANT_ID
from agent_ng.service.settings import ServiceSettings
from tests.helpers.graph_runs import until_released
from tests.helpers.live_server import serving
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.sse import events

GUARD_S = 15
THREAD_KEYS = {"thread_id", "created_at", "updated_at", "state_updated_at", "metadata", "status", "config", "values"}
"""A ``langgraph dev`` thread before its first run; after one it also has ``interrupts`` and ``error``."""
AGENT_METADATA = {"graph_id": "agent", "assistant_id": ASSISTANT_ID}


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def settings(checkpoint_url: str) -> ServiceSettings:
    return ServiceSettings(
        checkpoint_url=checkpoint_url, cache_url="memory://", mcp_config=None, system_prompt="", api_key=None
    )


def answers(turns: int) -> ScriptedModel:
    """A model that, ``turns`` times, calls ``add`` and then answers."""
    replies = []
    for n in range(turns):
        replies += [calls(("add", {"a": n, "b": 1})), Reply(text=f"It is {n + 1}.")]
    return ScriptedModel(replies=replies)


def new_id() -> str:
    return str(uuid.uuid4())


async def native_run(base: str, thread_id: str, question: str = "add") -> list:
    """One run through the native SSE route, to its ``run_end``."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=GUARD_S) as c,
        c.stream("POST", f"/threads/{thread_id}/runs/stream", json={"input": question}) as r,
    ):
        assert r.status_code == 200, await r.aread()
        return [f async for f in events(r)]


@asynccontextmanager
async def own_graph(checkpoint_url: str) -> AsyncIterator:
    """A graph of the test's own on the service's store: what ``agent-ng ask`` runs, and the
    reader of what ``langgraph dev`` would answer."""
    async with open_checkpointer(checkpoint_url) as saver:
        yield build_graph(answers(1), [add], saver, settings(checkpoint_url))


async def langgraph_dev_state(checkpoint_url: str, thread_id: str, checkpoint_id: str | None = None) -> dict:
    """The ``ThreadState`` ``langgraph dev`` builds from this checkpoint, as its client reads it."""
    async with own_graph(checkpoint_url) as graph:
        snapshot = await graph.aget_state(thread_config(thread_id, checkpoint_id))
    return orjson.loads(json_dumpb(state_snapshot_to_thread_state(snapshot)))


def answer_of(error: httpx.HTTPStatusError) -> tuple[int, object]:
    return error.response.status_code, error.response.json()


async def test_threads_are_created_read_patched_searched_and_deleted(checkpoint_url):
    mark = new_id()
    with serving(create_app(settings(checkpoint_url), model=answers(0), tools=[add])) as base:
        client = get_client(url=f"{base}/langgraph")
        thread_id = new_id()
        made = await client.threads.create(thread_id=thread_id, metadata={"mark": mark, "n": 1})
        with pytest.raises(httpx.HTTPStatusError) as taken:
            await client.threads.create(thread_id=thread_id, metadata={"mark": "other"})
        kept = await client.threads.create(thread_id=thread_id, metadata={"n": 9}, if_exists="do_nothing")
        read = await client.threads.get(thread_id)
        patched = await client.threads.update(thread_id, metadata={"n": 2, "extra": "x"})
        others = [(await client.threads.create(metadata={"mark": mark, "n": n}))["thread_id"] for n in (3, 4, 5)]
        first_page = await client.threads.search(metadata={"mark": mark}, limit=2)
        second_page = await client.threads.search(metadata={"mark": mark}, limit=2, offset=2)
        by_value = await client.threads.search(metadata={"mark": mark, "n": 4})
        by_ids = await client.threads.search(ids=[thread_id, others[0]], status="idle", sort_by="thread_id", sort_order="asc")
        busy = await client.threads.search(metadata={"mark": mark}, status="busy")
        slim = await client.threads.search(ids=[thread_id], select=["thread_id", "metadata"])
        empty_state = await client.threads.get_state(thread_id)
        empty_history = await client.threads.get_history(thread_id)
        await client.threads.delete(thread_id)
        with pytest.raises(httpx.HTTPStatusError) as gone:
            await client.threads.get(thread_id)
        with pytest.raises(httpx.HTTPStatusError) as deleted_twice:
            await client.threads.delete(thread_id)

    assert set(made) == THREAD_KEYS
    assert made["thread_id"] == thread_id and made["metadata"] == {"mark": mark, "n": 1}
    assert made["status"] == "idle" and made["values"] is None and made["config"] == {}
    assert answer_of(taken.value) == (409, {"detail": f"Thread with ID {thread_id} already exists"})
    assert kept == made == read, "do_nothing gives the thread as it was"
    assert patched["metadata"] == {"mark": mark, "n": 2, "extra": "x"}
    assert patched["created_at"] == made["created_at"] and patched["updated_at"] > made["updated_at"]
    assert [t["thread_id"] for t in first_page] == others[::-1][:2], "most recently updated first"
    assert [t["thread_id"] for t in second_page] == [others[0], thread_id]
    assert [t["thread_id"] for t in by_value] == [others[1]]
    assert [t["thread_id"] for t in by_ids] == sorted([thread_id, others[0]])
    assert busy == []
    assert slim == [{"thread_id": thread_id, "metadata": patched["metadata"]}]
    assert empty_state == {
        "values": {}, "next": [], "tasks": [], "metadata": None, "created_at": None, "checkpoint": None,
        "parent_checkpoint": None, "interrupts": [], "checkpoint_id": None, "parent_checkpoint_id": None,
    }, "what langgraph dev answers for a thread no run has written"
    assert empty_history == []
    assert answer_of(gone.value) == (404, {"detail": f"Thread with ID {thread_id} not found"})
    assert answer_of(deleted_twice.value)[0] == 404


async def test_a_thread_with_runs_answers_state_history_and_checkpoints_as_langgraph_dev_builds_them(checkpoint_url):
    with serving(create_app(settings(checkpoint_url), model=answers(2), tools=[add])) as base:
        client = get_client(url=f"{base}/langgraph")
        thread_id = (await client.threads.create(metadata={"mark": new_id()}))["thread_id"]
        for question in ("one", "two"):
            assert (await native_run(base, thread_id, question))[-1].data["status"] == "done"
        thread = await client.threads.get(thread_id)
        state = await client.threads.get_state(thread_id)
        whole = await client.threads.get_history(thread_id, limit=100)
        newest = await client.threads.get_history(thread_id, limit=2)
        older = await client.threads.get_history(thread_id, limit=2, before=newest[-1]["checkpoint"])
        older_by_id = await client.threads.get_history(thread_id, limit=2, before=newest[-1]["checkpoint_id"])
        inputs = await client.threads.get_history(thread_id, limit=100, metadata={"source": "input"})
        past = whole[3]
        by_id = await client.threads.get_state(thread_id, checkpoint_id=past["checkpoint_id"])
        by_checkpoint = await client.threads.get_state(thread_id, checkpoint=past["checkpoint"])
        only_messages = await client.threads.get_state(thread_id, select=["values.messages", "next"])
        just_past = await client.threads.get_history(thread_id, limit=10, checkpoint=past["checkpoint"])
        remote = RemoteGraph("agent", url=f"{base}/langgraph")
        remote_state = await remote.aget_state(thread_config(thread_id))
        remote_history = [s async for s in remote.aget_state_history(thread_config(thread_id), limit=3)]
        remote_past = await remote.aget_state(remote_history[-1].config)

    assert state == await langgraph_dev_state(checkpoint_url, thread_id)
    assert by_id == await langgraph_dev_state(checkpoint_url, thread_id, past["checkpoint_id"])
    assert by_checkpoint == past == {**by_id, "checkpoint": past["checkpoint"]}, (
        "the same state; by its id alone, the checkpoint names its namespace only where the saver does"
    )
    assert set(thread) == THREAD_KEYS | {"interrupts", "error"}
    assert thread["values"] == state["values"] and thread["status"] == "idle" and thread["interrupts"] == {}
    assert thread["config"] == {"configurable": {}}, "as langgraph dev's thread config after a run"
    assert thread["updated_at"] == thread["state_updated_at"] == state["created_at"]
    assert [m["type"] for m in state["values"]["messages"]] == ["human", "ai", "tool", "ai"] * 2
    assert whole[0] == state and len(whole) == 10, "five checkpoints a run: input, start, llm, tools, llm"
    assert [s["checkpoint_id"] for s in whole] == sorted((s["checkpoint_id"] for s in whole), reverse=True)
    assert all(s["checkpoint"]["checkpoint_ns"] == "" for s in whole), "no thread record among the states"
    assert newest == whole[:2] and older == older_by_id == whole[2:4]
    assert inputs == [s for s in whole if s["metadata"]["source"] == "input"] and len(inputs) == 2
    assert only_messages == {"values": {"messages": state["values"]["messages"]}, "next": []}
    assert just_past == [past], "the history of one checkpoint, as LangGraph lists it"
    assert remote_state.config["configurable"]["checkpoint_id"] == state["checkpoint_id"], "RemoteGraph reads it"
    assert len(remote_state.values["messages"]) == 8 and remote_state.next == ()
    assert [h.config["configurable"]["checkpoint_id"] for h in remote_history] == [s["checkpoint_id"] for s in whole[:3]]
    assert remote_past.config == remote_history[-1].config


async def test_update_state_as_a_node_is_read_back_and_forks_from_a_checkpoint(checkpoint_url):
    with serving(create_app(settings(checkpoint_url), model=answers(1), tools=[add])) as base:
        client = get_client(url=f"{base}/langgraph")
        thread_id = (await client.threads.create())["thread_id"]
        await native_run(base, thread_id)
        before = await client.threads.get_state(thread_id)
        written = await client.threads.update_state(
            thread_id, {"messages": [{"role": "user", "content": "written"}]}, as_node="tools"
        )
        after = await client.threads.get_state(thread_id)
        first_answer = (await client.threads.get_history(thread_id, limit=100))[-3]
        forked = await client.threads.update_state(
            thread_id, {"messages": [{"role": "user", "content": "forked"}]}, as_node="tools",
            checkpoint=first_answer["checkpoint"],
        )
        fork = await client.threads.get_state(thread_id, checkpoint=forked["checkpoint"])
        with pytest.raises(httpx.HTTPStatusError) as no_node:
            await client.threads.update_state(thread_id, {"messages": []}, as_node="nowhere")
        await client.threads.delete(thread_id)
        with pytest.raises(httpx.HTTPStatusError) as gone:
            await client.threads.get_state(thread_id)

    async with own_graph(checkpoint_url) as graph:
        left = [await graph.checkpointer.aget_tuple(record_config(thread_id)), await graph.aget_state(thread_config(thread_id))]

    assert set(written) == {"checkpoint", "configurable", "checkpoint_id"}
    assert written["checkpoint"] == after["checkpoint"] and written["checkpoint_id"] == after["checkpoint_id"]
    assert after["parent_checkpoint"] == before["checkpoint"]
    assert after["next"] == ["llm"], "written as the tools' output, so the model is next"
    assert after["metadata"]["source"] == "update"
    assert [m["content"] for m in after["values"]["messages"]][-2:] == ["It is 1.", "written"]
    assert fork["parent_checkpoint"]["checkpoint_id"] == first_answer["checkpoint_id"]
    assert [m["content"] for m in fork["values"]["messages"]] == [
        m["content"] for m in first_answer["values"]["messages"]
    ] + ["forked"]
    assert no_node.value.response.status_code == 400 and "nowhere" in no_node.value.response.json()["detail"]
    assert gone.value.response.status_code == 404
    assert left[0] is None and left[1].values == {}, "deleting the thread deleted its record and its checkpoints"


async def test_a_thread_a_run_holds_is_busy_and_refuses_delete_and_update(checkpoint_url):
    released, started = threading.Event(), threading.Event()

    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="done")])
    with serving(create_app(settings(checkpoint_url), model=model, tools=[until_released(released, started, GUARD_S)])) as base:
        client = get_client(url=f"{base}/langgraph")
        thread_id = (await client.threads.create())["thread_id"]
        running = asyncio.create_task(native_run(base, thread_id))
        async with asyncio.timeout(GUARD_S):
            await asyncio.to_thread(started.wait, GUARD_S)
        try:
            thread = await client.threads.get(thread_id)
            found = await client.threads.search(ids=[thread_id], status="busy")
            with pytest.raises(httpx.HTTPStatusError) as refused_delete:
                await client.threads.delete(thread_id)
            with pytest.raises(httpx.HTTPStatusError) as refused_update:
                await client.threads.update_state(thread_id, {"messages": []}, as_node="tools")
        finally:
            released.set()
        assert (await running)[-1].data["status"] == "done"
        after = await client.threads.get(thread_id)

    assert thread["status"] == "busy" and [t["thread_id"] for t in found] == [thread_id]
    assert refused_delete.value.response.status_code == 409
    assert refused_update.value.response.status_code == 409
    assert after["status"] == "idle"


async def test_a_thread_waiting_for_approval_is_interrupted_with_its_interrupts(checkpoint_url):
    @tool
    def wipe() -> str:
        """Needs a person's approval."""
        return "wiped"

    configure(wipe, requires_approval=True)
    with serving(create_app(settings(checkpoint_url), model=ScriptedModel(replies=[calls(("wipe", {}))]), tools=[wipe])) as base:
        client = get_client(url=f"{base}/langgraph")
        thread_id = (await client.threads.create())["thread_id"]
        assert (await native_run(base, thread_id))[-1].data["status"] == "interrupted"
        thread = await client.threads.get(thread_id)
        state = await client.threads.get_state(thread_id)
        found = await client.threads.search(ids=[thread_id], status="interrupted")

    assert state == await langgraph_dev_state(checkpoint_url, thread_id)
    assert thread["status"] == "interrupted" and found == [thread]
    [waiting] = state["interrupts"]
    assert set(waiting) == {"id", "value"}
    assert thread["interrupts"] == {task["id"]: [waiting] for task in state["tasks"] if task["interrupts"]}
    assert state["next"] == ["tools"]


async def test_threads_of_the_cli_are_found_and_a_thread_record_confuses_no_thread_listing(checkpoint_url):
    cli_thread = new_id()
    async with own_graph(checkpoint_url) as graph:
        async with asyncio.timeout(GUARD_S):
            [e async for e in stream(graph, {"messages": [("user", "add")]}, thread_config(cli_thread))]
        first = [s async for s in graph.aget_state_history(thread_config(cli_thread))][-1]

    with serving(create_app(settings(checkpoint_url), model=answers(1), tools=[add])) as base:
        client = get_sync_client(url=f"{base}/langgraph")
        found = client.threads.get(cli_thread)
        listed = client.threads.search(ids=[cli_thread], metadata={"graph_id": "agent"})
        history = client.threads.get_history(cli_thread, limit=100)
        record_only = client.threads.create(metadata={"kind": "record only"})["thread_id"]
        patched = client.threads.update(cli_thread, metadata={"title": "from the CLI"})
        native_thread = new_id()
        assert (await native_run(base, native_thread))[-1].data["status"] == "done"
        native = client.threads.search(ids=[native_thread])

    async with own_graph(checkpoint_url) as graph:
        listed_by_cli = {info.thread_id for info in await list_threads(graph, limit=None)}
        ids = await thread_ids(graph.checkpointer)
        record = await get_record(graph, cli_thread)
        history_after = [s async for s in graph.aget_state_history(thread_config(cli_thread))]

    assert found["metadata"] == AGENT_METADATA and found["status"] == "idle"
    assert datetime.fromisoformat(found["created_at"]) == datetime.fromisoformat(first.created_at)
    assert [m["type"] for m in found["values"]["messages"]] == ["human", "ai", "tool", "ai"]
    assert listed == [found] and len(history) == 5
    assert [(t["thread_id"], t["metadata"], t["status"]) for t in native] == [(native_thread, AGENT_METADATA, "idle")]
    assert patched["metadata"] == {**AGENT_METADATA, "title": "from the CLI"}
    assert patched["created_at"] == found["created_at"], "its record keeps when the thread began"
    assert record is not None and record.metadata == patched["metadata"]
    assert cli_thread in listed_by_cli and cli_thread in ids
    assert record_only not in listed_by_cli and record_only not in ids, "a thread with no conversation is not listed"
    assert len(history_after) == 5 and all(s.config["configurable"]["checkpoint_ns"] != NAMESPACE for s in history_after)


async def test_unknown_threads_and_bad_bodies_get_langgraph_devs_answers(checkpoint_url):
    missing = new_id()
    with serving(create_app(settings(checkpoint_url), model=answers(0), tools=[add])) as base:
        client = get_sync_client(url=f"{base}/langgraph")
        calls_ = {
            "get": lambda: client.threads.get(missing),
            "state": lambda: client.threads.get_state(missing),
            "state at": lambda: client.threads.get_state(missing, checkpoint_id=new_id()),
            "history": lambda: client.threads.get_history(missing),
            "update": lambda: client.threads.update_state(missing, {"messages": []}, as_node="tools"),
            "delete": lambda: client.threads.delete(missing),
            "patch": lambda: client.threads.update(missing, metadata={"a": 1}),
        }
        answered = {}
        for name, call in calls_.items():
            with pytest.raises(httpx.HTTPStatusError) as e:
                call()
            answered[name] = answer_of(e.value)
        with httpx.Client(base_url=f"{base}/langgraph", timeout=GUARD_S) as http:
            unsupported = http.post("/threads", json={"ttl": {"ttl": 5}})
            thread_id = http.post("/threads", json={}).json()["thread_id"]
            records_hidden = [
                http.post(f"/threads/{thread_id}/{route}", json={"checkpoint": {"checkpoint_ns": NAMESPACE}})
                for route in ("state/checkpoint", "history", "state")
            ]
            wrong = http.post("/threads/search", json={"limit": 0, "status": "sleeping"})

    not_found = (404, {"detail": f"Thread with ID {missing} not found"})
    assert answered == {**dict.fromkeys(calls_, not_found), "patch": (404, {"detail": "Not Found"})}
    assert unsupported.status_code == 422 and unsupported.json()["detail"][0]["loc"] == ["body", "ttl"]
    assert wrong.status_code == 422
    assert [(r.status_code, r.json()["detail"][0]["loc"]) for r in records_hidden] == [
        (422, ["body", "checkpoint", "checkpoint_ns"])
    ] * 3, "no state is read from or written to the thread records' namespace"
    assert {tuple(e["loc"]) for e in wrong.json()["detail"]} == {("body", "limit"), ("body", "status")}


def test_the_agent_is_the_one_assistant_by_graph_id_and_stable_id(tmp_path):
    with serving(create_app(settings(f"sqlite:///{tmp_path / 'a.db'}"), model=answers(0), tools=[add])) as base:
        client = get_sync_client(url=f"{base}/langgraph")
        info = client.http.get("/info")
        everyone = client.assistants.search()
        filtered = client.assistants.search(graph_id="agent", metadata={"created_by": "system"})
        none = client.assistants.search(metadata={"created_by": "someone"}), client.assistants.search(offset=1)
        slim = client.assistants.search(select=["assistant_id", "graph_id"])
        by_graph, by_id = client.assistants.get("agent"), client.assistants.get(ASSISTANT_ID)
        drawn = client.assistants.get_graph("agent")
        xray = client.assistants.get_graph(ASSISTANT_ID, xray=1)
        schemas = client.assistants.get_schemas("agent")
        subgraphs = client.assistants.get_subgraphs("agent")
        refused = {}
        for name, call in {
            "unknown": lambda: client.assistants.get(new_id()),
            "not a uuid": lambda: client.assistants.get("someone"),
            "unknown graph": lambda: client.assistants.get_graph(new_id()),
            "bad xray": lambda: client.assistants.get_graph("agent", xray=-1),
            "other graph": lambda: client.assistants.search(graph_id="other"),
        }.items():
            with pytest.raises(httpx.HTTPStatusError) as e:
                call()
            refused[name] = answer_of(e.value)

    assert set(info) == {"version", "langgraph_py_version", "flags", "host"}
    assert info["flags"]["assistants"] is True and info["flags"]["crons"] is False
    assert everyone == filtered == [by_graph] and by_graph == by_id
    assert set(by_graph) == {
        "assistant_id", "graph_id", "config", "context", "metadata", "name", "created_at", "updated_at", "version",
        "description",
    }
    assert by_graph["assistant_id"] == ASSISTANT_ID and by_graph["graph_id"] == "agent"
    assert none == ([], [])
    assert slim == [{"assistant_id": ASSISTANT_ID, "graph_id": "agent"}]
    assert {n["id"] for n in drawn["nodes"]} == {"__start__", "llm", "tools", "__end__"}
    assert all("id" not in (n.get("data") or {}) for n in drawn["nodes"] if isinstance(n.get("data"), dict))
    assert xray == drawn, "the agent has no subgraphs to show"
    assert set(schemas) == {"graph_id", "input_schema", "output_schema", "state_schema", "config_schema", "context_schema"}
    assert "messages" in schemas["input_schema"]["properties"] and "messages" in schemas["state_schema"]["properties"]
    assert subgraphs == {}
    assert refused == {
        "unknown": (404, {"detail": "Not Found"}),
        "not a uuid": (422, {"detail": "Invalid assistant ID: must be a UUID"}),
        "unknown graph": (404, {"detail": "Not Found"}),
        "bad xray": (422, {"detail": "Invalid xray value"}),
        "other graph": (404, {"detail": "Graph 'other' not found. Expected one of: ['agent']"}),
    }


class RunRecords:
    """The runs' records as the run routes keep them: the status of each thread's latest run."""

    def __init__(self, latest: dict[str, str]) -> None:
        self.latest = latest

    def latest_status(self, thread_id: str) -> str | None:
        return self.latest.get(thread_id)

    def forget_thread(self, thread_id: str) -> None:
        self.latest.pop(thread_id, None)


async def test_a_thread_whose_latest_run_failed_is_in_error_and_one_with_a_pending_run_is_busy(checkpoint_url):
    app = create_app(settings(checkpoint_url), model=answers(0), tools=[add])
    with serving(app) as base:
        client = get_client(url=f"{base}/langgraph")
        failed, pending, fine = [(await client.threads.create())["thread_id"] for _ in range(3)]
        app.state.run_records = RunRecords({failed: "error", pending: "pending", fine: "success"})
        statuses = {t: (await client.threads.get(t))["status"] for t in (failed, pending, fine)}
        in_error = await client.threads.search(ids=[failed, pending, fine], status="error")
        await client.threads.delete(failed)

    assert statuses == {failed: "error", pending: "busy", fine: "idle"}
    assert [t["thread_id"] for t in in_error] == [failed]
    assert failed not in app.state.run_records.latest, "a deleted thread's runs are forgotten with it"




async def test_a_thread_record_lives_beside_the_checkpoints_on_every_saver_and_goes_with_the_thread(any_checkpoint_url):
    cli, api = new_id(), new_id()
    async with own_graph(any_checkpoint_url) as graph:
        for n in range(4):
            await graph.aupdate_state(thread_config(cli), {"messages": [("user", f"q{n}")]}, as_node="tools")
        first = [s async for s in graph.aget_state_history(thread_config(cli))][-1]
        await ensure_thread(graph, cli, {"a": 1})
        await ensure_thread(graph, api)
        await ensure_thread(graph, cli, {"b": "\u0000 kept"})
        records = [await get_record(graph, cli), await get_record(graph, api)]
        listed = [await thread_ids(graph.checkpointer), {i.thread_id for i in await list_threads(graph, limit=None)}]
        history = [s async for s in graph.aget_state_history(thread_config(cli))]
        if any_checkpoint_url == "memory://":
            for thread_id in (cli, api):
                await graph.checkpointer.adelete_thread(thread_id)
        else:
            pruned = await prune(graph.checkpointer, Retention(keep_checkpoints=2), threads=[cli, api])
            kept = [await get_record(graph, cli), len([s async for s in graph.aget_state_history(thread_config(cli))])]
            await prune(graph.checkpointer, Retention(keep_checkpoints=0, thread_ttl_s=1), threads=[cli, api], now=time.time() + 60)
            assert pruned.checkpoints_deleted == 2 and kept == [records[0], 2], "retention keeps the record"
        left = [await thread_exists(graph, cli), await thread_exists(graph, api)]

    assert records[0].metadata == {"a": 1, "b": "\u0000 kept"} and records[1].metadata == {}
    assert records[0].created_at == datetime.fromisoformat(first.created_at)
    assert cli in listed[0] and api not in listed[0] and cli in listed[1] and api not in listed[1]
    assert len(history) == 4 and {s.config["configurable"]["checkpoint_ns"] for s in history} == {""}
    assert left == [False, False], "deleting a thread (or expiring it) deletes its record"
