"""Runs that also stream LangGraph's own modes (``run_events``), the frames the LangGraph Server
API makes of them (``Frames``), and background runs that log those frames.

The frames are compared with what ``langgraph_api``'s own code (``stream.astream_state``, the
function behind ``langgraph dev``'s run streams, and its ``serde.json_dumpb``) makes of the same
graph and script, ids and times aside. Stops are made from inside the consumer once a given
item was seen, never by timing; a tool that must still be running blocks on an ``Event``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import aclosing, asynccontextmanager, nullcontext

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command, Interrupt, Send

from agent_ng.contract import AgentEvent
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import Part, run_events, stream
from agent_ng.graph.settle import CANCELLED
from agent_ng.service.background import BackgroundRuns
from agent_ng.service.event_log import MemoryEventLog, event_json
from agent_ng.service.langgraph_server.frames import Frames, run_status
from agent_ng.service.metrics import Metrics
from agent_ng.service.runner import Runner
from agent_ng.settings import Settings
from agent_ng.tools import progress
from agent_ng.tools.registry import configure
from tests.helpers.scripted_model import Reply, ScriptedModel

GUARD_S = 10
QUESTION = "add 1 and 2"
ALL_PARTS = ("values", "updates", "messages", "custom", "debug", "checkpoints", "tasks")


def adder():
    """A new ``add`` tool each time (``configure`` marks the tool object itself)."""

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        progress.report(0.5, "half way")
        return a + b

    return add


@tool
async def forever() -> str:
    """Runs until cancelled."""
    await asyncio.Event().wait()


def settings() -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="")


def agent(kind: str = "plain"):
    """Our graph on a fresh script: ``plain`` adds, ``approval`` waits for a person first,
    ``nested`` is the agent as a subgraph of another graph, ``stuck`` runs a tool forever."""
    add = adder()
    tools = [add]
    replies = [Reply(text="Adding them.", tool_calls=[("add", {"a": 1, "b": 2})]), Reply(text="It is 3.")]
    if kind == "approval":
        tools = [configure(add, requires_approval=True)]
    elif kind == "stuck":
        tools = [add, forever]
        replies[0] = Reply(text="Adding them.", tool_calls=[("add", {"a": 1, "b": 2}), ("forever", {})])
    graph = build_graph(ScriptedModel(replies=replies), tools=tools, checkpointer=InMemorySaver(), settings=settings())
    if kind != "nested":
        return graph
    outer = StateGraph(MessagesState)
    outer.add_node("agent", graph)
    outer.add_edge(START, "agent")
    return outer.compile(checkpointer=InMemorySaver())


def failing():
    """A graph whose one node raises."""

    async def broken(state: MessagesState) -> dict:
        raise RuntimeError("boom: the node failed")

    builder = StateGraph(MessagesState)
    builder.add_node("llm", broken)
    builder.add_edge(START, "llm")
    return builder.compile(checkpointer=InMemorySaver())


def config(thread: str | None = None, **extra) -> dict:
    return {"configurable": {"thread_id": thread or str(uuid.uuid4())}, **extra}


def ask(text: str = QUESTION) -> dict:
    return {"messages": [HumanMessage(text)]}


async def items_of(run) -> list:
    async with asyncio.timeout(GUARD_S), aclosing(run):
        return [item async for item in run]


def brief(event: AgentEvent) -> tuple:
    """An event without its ids and times."""
    return event.type, event.name, event.text, event.content, event.status, event.progress


def events_in(items: list) -> list[tuple]:
    return [brief(i) for i in items if isinstance(i, AgentEvent)]


async def test_parts_come_in_the_graphs_order_each_before_the_events_made_from_it():
    items = await items_of(run_events(agent(), ask(), config(), parts=ALL_PARTS))
    events = await items_of(stream(agent(), ask(), config()))
    modes = ["messages", "custom", "updates", *ALL_PARTS[3:], "values"]
    raw = await items_of(agent().astream(ask(), config(), stream_mode=modes, durability="sync"))

    assert events_in(items) == [brief(e) for e in events], "the events are stream()'s"
    parts = [i for i in items if isinstance(i, Part)]
    assert [p.mode for p in parts] == [mode for mode, _ in raw], "every chunk asked for, in the graph's order"
    assert {p.namespace for p in parts} == {()}
    made_from = {"content": "messages", "tool_call": "updates", "tool_start": "custom",
                 "tool_progress": "custom", "tool_result": "custom", "tool_complete": "custom"}
    checked = 0
    for n, item in enumerate(items):
        if isinstance(item, AgentEvent) and item.type in made_from:
            before = next(i for i in reversed(items[:n]) if isinstance(i, Part))
            assert before.mode == made_from[item.type], (item.type, before.mode)
            checked += 1
    assert checked >= 8


async def test_stream_is_run_events_itself():
    """``stream`` hands back ``run_events``' own generator: no generator hop per token."""
    run = stream(agent(), ask(), config())

    assert run.ag_code is run_events.__code__
    await run.aclose()


async def test_an_unknown_mode_is_refused_before_the_run_starts():
    with pytest.raises(ValueError, match="lifecycle"):
        await items_of(run_events(agent(), ask(), config(), parts=["values", "lifecycle"]))


async def test_with_subgraphs_parts_name_their_namespace_and_events_come_from_the_graph_itself():
    nested = await items_of(run_events(agent("nested"), ask(), config(), parts=["updates", "messages"], subgraphs=True))
    plain = await items_of(run_events(agent(), ask(), config(), parts=["updates"], subgraphs=True))

    namespaces = {p.namespace for p in nested if isinstance(p, Part)}
    assert () in namespaces and any(ns and ns[0].startswith("agent:") for ns in namespaces)
    assert [e[0] for e in events_in(nested)] == ["run_start", "run_end"], "the subgraph's chunks make no events"
    assert events_in(plain) == [brief(e) for e in await items_of(stream(agent(), ask(), config()))]


async def test_events_mode_runs_under_astream_events_and_still_yields_every_event():
    cfg = config(run_id=uuid.uuid4())
    items = await items_of(run_events(agent(), ask(), cfg, parts=["events", "values"]))
    events = await items_of(stream(agent(), ask(), config()))

    assert events_in(items) == [brief(e) for e in events]
    streamed = [p.chunk for p in items if isinstance(p, Part) and p.mode == "events"]
    kinds = {e["event"] for e in streamed}
    assert {"on_chain_start", "on_chat_model_stream", "on_tool_start", "on_chain_end"} <= kinds
    assert not [e for e in streamed if e["event"] == "on_chain_stream" and e["run_id"] == str(cfg["run_id"])], (
        "the graph's own stream chunks are read, not passed on"
    )
    values = [p for p in items if isinstance(p, Part) and p.mode == "values"]
    assert values and values[-1].chunk["messages"][-1].text == "It is 3."


@pytest.mark.parametrize("parts", [("values", "messages", "updates"), ("events",)])
async def test_a_run_with_parts_cancelled_mid_tool_settles_as_stream_does(parts):
    graph, cfg = agent("stuck"), config()
    seen: list[str] = []

    async def consume():
        async for item in run_events(graph, ask(), cfg, parts=parts):
            if isinstance(item, AgentEvent):
                seen.append(f"{item.type}:{item.name}")
                if "tool_complete:add" in seen and "tool_start:forever" in seen:
                    task.cancel()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(task, return_exceptions=True)

    assert task.cancelled()
    state = await graph.aget_state(cfg)
    assert state.next == () and not state.tasks, "the thread is idle, as after a normal end"
    messages = state.values["messages"]
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "ToolMessage"]
    assert messages[1].text == "Adding them."
    assert {(m.name, m.status, m.text) for m in messages[2:]} == {("add", "success", "3"), ("forever", "error", CANCELLED)}


# --- Frames: what langgraph dev sends ---------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VOLATILE = [
    (UUID, "<uuid>"),
    (re.compile(r"call_[0-9a-f]{12}"), "<call>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<interrupt>"),
    (re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(\+00:00|Z)?"), "<time>"),
    (re.compile(r'"(elapsed_s|eta_s)":[-0-9.e]+'), r'"\1":0'),
]


def normalized(frames: list[tuple[str, str]]) -> list[tuple[str, str]]:
    def clean(text: str) -> str:
        for pattern, placeholder in VOLATILE:
            text = pattern.sub(placeholder, text)
        return text

    return [(clean(event), clean(data)) for event, data in frames]


@pytest.fixture
def langgraph_dev(monkeypatch):
    """``langgraph_api.stream.astream_state`` on a graph of ours, in this process: returns
    the frames it makes (event name, ``json_dumpb`` text; a failed run's ``error`` frame as the
    worker publishes it) and the config metadata it added, for our run to carry too."""
    for name, value in {"REDIS_URI": "fake", "DATABASE_URI": ":memory:", "MIGRATIONS_PATH": "__inmem",
                        "LANGGRAPH_RUNTIME_EDITION": "inmem"}.items():
        monkeypatch.setenv(name, value)
    lg_stream = pytest.importorskip("langgraph_api.stream")
    from langgraph_api.asyncio import ValueEvent
    from langgraph_api.serde import json_dumpb

    async def no_store(*args, **kwargs):
        return None

    monkeypatch.setattr(lg_stream.api_store, "get_store", no_store)
    monkeypatch.setattr(lg_stream.api_checkpointer, "get_checkpointer", no_store)

    async def run(graph, stream_mode: list[str], subgraphs: bool) -> tuple[list[tuple[str, str]], dict]:
        @asynccontextmanager
        async def get_graph(*args, **kwargs):
            yield graph

        monkeypatch.setattr(lg_stream, "get_graph", get_graph)
        cfg = {"configurable": {"graph_id": "agent", "thread_id": str(uuid.uuid4())}, "metadata": {}}
        kwargs = {"input": {"messages": [{"role": "user", "content": QUESTION}]}, "command": None,
                  "stream_mode": stream_mode, "config": cfg, "subgraphs": subgraphs,
                  "checkpoint_during": True, "durability": None, "context": None}
        frames = []
        try:
            async with asyncio.timeout(GUARD_S):
                async for mode, chunk in lg_stream.astream_state({"run_id": uuid.uuid4(), "kwargs": kwargs}, 1, ValueEvent()):
                    frames.append((mode, json_dumpb(chunk).decode()))
        except RuntimeError as e:
            frames.append(("error", json_dumpb(e).decode()))
        return frames, cfg["metadata"]

    return run


async def our_frames(
    graph, stream_mode: list[str], subgraphs: bool, metadata: dict, fails: bool = False
) -> list[tuple[str, str]]:
    """Our run's frames, as a stream route sends them from the log's entries."""
    frames = Frames(stream_mode, subgraphs)
    cfg = {"configurable": {"graph_id": "agent", "thread_id": str(uuid.uuid4())}, "metadata": dict(metadata)}
    run = run_events(graph, {"messages": [{"role": "user", "content": QUESTION}]}, cfg,
                     parts=frames.parts, subgraphs=subgraphs)
    sent = []
    with pytest.raises(RuntimeError) if fails else nullcontext():
        async with asyncio.timeout(GUARD_S), aclosing(run):
            async for item in run:
                for n, entry in enumerate(frames.record(item)):
                    if (sse := Frames.sse((str(n), entry["type"], event_json(entry)), resumable=False)) is not None:
                        assert sse[2] is None
                        sent.append(sse[:2])
    return sent


@pytest.mark.parametrize(
    ("kind", "stream_mode", "subgraphs"),
    [
        ("plain", ["values", "updates", "messages-tuple", "custom"], False),
        ("plain", ["messages"], False),
        ("plain", ["debug", "tasks", "checkpoints"], False),
        ("approval", ["values", "updates", "messages-tuple"], False),
        ("approval", ["values"], False),
        ("nested", ["values", "updates", "messages-tuple", "custom", "debug"], True),
        ("nested", ["messages", "updates"], True),
        ("nested", ["values", "messages-tuple"], False),
    ],
)
async def test_the_frames_are_langgraph_devs(langgraph_dev, kind, stream_mode, subgraphs):
    theirs, metadata = await langgraph_dev(agent(kind), stream_mode, subgraphs)
    ours = await our_frames(agent(kind), stream_mode, subgraphs, metadata)

    assert normalized(ours) == normalized(theirs)
    assert ours[0][0] == "metadata" and len(ours) > 3


@pytest.mark.parametrize(("kind", "subgraphs"), [("plain", False), ("nested", True)])
async def test_events_frames_are_langgraph_devs_but_for_an_id_langgraph_sets_while_they_are_read(
    langgraph_dev, kind, subgraphs
):
    """An ``on_chain_stream`` event holds the node's ``ToolMessage`` itself, to which LangGraph
    gives its id at the end of the step: a reader that serializes the event later than we do
    (langgraph dev) sees the id."""
    theirs, metadata = await langgraph_dev(agent(kind), ["events", "values"], subgraphs)
    ours = await our_frames(agent(kind), ["events", "values"], subgraphs, metadata)

    late_id = re.compile(r'("type":"tool","name":"add","id":)(null|"<uuid>")')
    assert [(e, late_id.sub(r"\1<id>", d)) for e, d in normalized(ours)] == [
        (e, late_id.sub(r"\1<id>", d)) for e, d in normalized(theirs)
    ]
    assert sum(e == "events" for e, _ in ours) > 20
    assert any(e.startswith("values|agent:") for e, _ in ours) == subgraphs


async def test_a_failed_run_ends_with_langgraph_devs_error_frame(langgraph_dev):
    theirs, metadata = await langgraph_dev(failing(), ["values", "updates"], False)
    ours = await our_frames(failing(), ["values", "updates"], False, metadata, fails=True)

    assert normalized(ours) == normalized(theirs)
    assert ours[-1] == ("error", '{"error":"RuntimeError","message":"boom: the node failed"}')


def test_legacy_messages_accumulate_per_message_id():
    frames = Frames(["messages"])
    meta = {"langgraph_node": "llm"}
    first = frames.record(Part("messages", (AIMessageChunk("Hel", id="m1"), meta)))
    second = frames.record(Part("messages", (AIMessageChunk("lo", id="m1"), meta)))
    other = frames.record(Part("messages", (ToolMessage("3", tool_call_id="c1", id="m2"), meta)))

    assert [f["event"] for f in first] == ["messages/metadata", "messages/partial"]
    assert first[0]["data"] == {"m1": {"metadata": meta}}
    assert [f["event"] for f in second] == ["messages/partial"]
    assert second[0]["data"][0].content == "Hello" and second[0]["data"][0].type == "ai"
    assert [f["event"] for f in other] == ["messages/metadata", "messages/complete"]


def test_a_mode_the_api_does_not_serve_is_named():
    with pytest.raises(ValueError, match="'lifecycle'"):
        Frames(["values", "lifecycle"])


@pytest.mark.parametrize(
    ("status", "langgraph"),
    [("done", "success"), ("max_steps", "success"), ("interrupted", "success"),
     ("cancelled", "interrupted"), ("error", "error")],
)
def test_the_run_status_is_what_langgraph_dev_records(status, langgraph):
    """A run that ends waiting for approval has succeeded there (its thread is interrupted);
    a cancelled run is interrupted; a model timeout is an error like any other."""
    assert run_status({"type": "run_end", "status": status}) == langgraph


def test_the_log_encodes_what_frames_carry_as_langgraph_devs_serde():
    serde = pytest.importorskip("langgraph_api.serde")
    values = {
        "chunk": AIMessageChunk("hi", id="m1", tool_call_chunks=[{"name": "add", "args": "{", "id": "c", "index": 0}]),
        "human": HumanMessage("q", id="h1"),
        "interrupt": Interrupt(value={"type": "approval"}, id="i1"),
        "send": Send("tools", [{"name": "add", "args": {}, "id": "c"}]),
        "command": Command(resume={"c": "yes"}),
        "set": {1},
        "tuple": (HumanMessage("q", id="h1"), {"langgraph_node": "llm"}),
        "uuid": uuid.UUID(int=7),
    }

    assert event_json(values) == serde.json_dumpb(values).decode()


def test_a_message_with_a_lone_surrogate_is_still_encoded_as_a_message():
    encoded = event_json({"data": [AIMessageChunk("bad \ud800 text", id="m1")]})

    assert '"content":"bad \ufffd text"' in encoded and '"id":"m1"' in encoded and '"type":"AIMessageChunk"' in encoded


# --- background runs that log frames -----------------------------------------------------------


async def read_all(log: MemoryEventLog, run_id: str) -> list[tuple[str, dict]]:
    async with asyncio.timeout(GUARD_S):
        return [entry async for entry in log.read(run_id)]


async def test_a_background_run_logs_what_record_makes_of_each_item():
    metrics, log = Metrics(), MemoryEventLog()
    runs = BackgroundRuns(Runner(agent(), metrics), log)
    frames = Frames(["values", "messages-tuple", "custom"])
    chosen = str(uuid.uuid4())

    run_id = await runs.start("t1", QUESTION, None, record=frames.record, run_id=chosen, parts=frames.parts)
    entries = await read_all(log, run_id)

    assert run_id == chosen
    assert entries[0][1] == {"type": "frame", "event": "metadata", "data": {"run_id": run_id, "attempt": 1}}
    assert entries[-1][1]["type"] == "run_end" and run_status(entries[-1][1]) == "success"
    sent = [Frames.sse((cursor, data["type"], event_json(data)), resumable=True) for cursor, data in entries]
    assert sent[-1] is None and all(s is not None for s in sent[:-1])
    assert [s[2] for s in sent[:-1]] == [c for c, _ in entries[:-1]], "a resumable run's ids are the log's cursors"
    assert {s[0] for s in sent[:-1]} == {"metadata", "values", "messages", "custom"}
    assert metrics.registry.get_sample_value("agent_runs_total", {"status": "done"}) == 1


async def test_a_background_run_continues_with_a_command_and_the_default_record_keeps_events():
    graph, log = agent("approval"), MemoryEventLog()
    runs = BackgroundRuns(Runner(graph, Metrics()), log)

    first = await read_all(log, await runs.start("t1", {"messages": [("user", QUESTION)]}))
    interrupt = next(data for _, data in first if data["type"] == "interrupt")
    second = await read_all(log, await runs.start("t1", Command(resume={interrupt["interrupt_id"]: "approve"})))

    assert first[-1][1]["status"] == "interrupted"
    assert [data["type"] for _, data in second][0] == "run_start" and second[-1][1]["status"] == "done"
    assert "tool_complete" in [data["type"] for _, data in second]


async def test_a_cancelled_background_run_ends_its_log_with_a_run_end_made_by_record():
    graph, log = agent("stuck"), MemoryEventLog()
    runs = BackgroundRuns(Runner(graph, Metrics()), log)
    frames, recorded = Frames(["custom", "updates"]), []

    def record(item):
        recorded.append(item)
        return frames.record(item)

    run_id = await runs.start("t1", QUESTION, record=record, parts=frames.parts)
    waiting = {("tool_complete", "add"), ("tool_start", "forever")}
    async with asyncio.timeout(GUARD_S):
        async for _, data in log.read(run_id):
            if data.get("event") == "custom":
                waiting.discard((data["data"]["agent_ng"], data["data"]["name"]))
                if not waiting:
                    break
    assert await runs.cancel(run_id)
    entries = await read_all(log, run_id)

    assert entries[-1][1]["type"] == "run_end" and entries[-1][1]["status"] == "cancelled"
    assert run_status(entries[-1][1]) == "interrupted"
    assert isinstance(recorded[-1], AgentEvent) and recorded[-1].type == "run_end", "the run_end went through record"
    state = await graph.aget_state({"configurable": {"thread_id": "t1"}})
    assert state.next == () and {m.text for m in state.values["messages"] if isinstance(m, ToolMessage)} == {"3", CANCELLED}


async def test_a_question_loads_its_threads_state_once_before_the_graph_does(monkeypatch):
    """The runner's refusal of a thread waiting for approval and the settling of an unfinished
    step read the same load of the thread's state (each load deserializes the whole history)."""
    graph, log = agent(), MemoryEventLog()
    runs = BackgroundRuns(Runner(graph, Metrics()), log)
    loads = []
    real = type(graph).aget_state

    async def counted(self, config, *args, **kwargs):
        loads.append(config["configurable"]["thread_id"])
        return await real(self, config, *args, **kwargs)

    monkeypatch.setattr(type(graph), "aget_state", counted)
    entries = await read_all(log, await runs.start("t1", QUESTION))

    assert entries[-1][1]["type"] == "run_end" and entries[-1][1]["status"] == "done"
    assert loads == ["t1"]


async def test_new_input_on_a_thread_waiting_for_approval_is_refused_with_its_error_frame():
    graph, log = agent("approval"), MemoryEventLog()
    runs = BackgroundRuns(Runner(graph, Metrics()), log)
    await read_all(log, await runs.start("t1", QUESTION))
    frames = Frames(["values"])

    entries = await read_all(log, await runs.start("t1", "another question", record=frames.record, parts=frames.parts))

    assert [data.get("event", data["type"]) for _, data in entries] == ["metadata", "error", "run_end"]
    assert entries[1][1]["data"]["error"] == "UnfinishedRunError"
    assert "calls waiting for approval" in entries[1][1]["data"]["message"]
