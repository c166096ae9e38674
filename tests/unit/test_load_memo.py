"""``MemoSerializer``: a checkpoint loaded again within a few seconds is deserialized once, and
each load still gets containers of its own; a run in the service deserializes its thread's
checkpoint once where it did three times."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import run_events
from agent_ng.persistence import load_memo
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.load_memo import MIN_BYTES, MemoSerializer
from agent_ng.persistence.threads import thread_status
from agent_ng.settings import Settings
from tests.helpers.scripted_model import Reply, ScriptedModel

LONG = "a line of a long conversation. " * (MIN_BYTES // 30 + 1)


def checkpoint_blob(text: str = LONG) -> tuple[str, bytes]:
    checkpoint = {
        "id": "c1",
        "channel_values": {"messages": [HumanMessage(text, id="m1"), AIMessage("ok", id="m2")]},
        "channel_versions": {"messages": 2},
        "versions_seen": {"llm": {"messages": 1}},
        "updated_channels": ["messages"],
    }
    return JsonPlusSerializer().dumps_typed(checkpoint)


def test_a_blob_loaded_again_is_deserialized_once_into_containers_of_its_own():
    serde, blob = MemoSerializer(), checkpoint_blob()
    first, second = serde.loads_typed(blob), serde.loads_typed(blob)
    assert first == second == JsonPlusSerializer().loads_typed(blob)
    assert first["channel_values"]["messages"][0] is second["channel_values"]["messages"][0], "deserialized once"
    for a, b in ((first, second), (first["versions_seen"], second["versions_seen"]),
                 (first["channel_values"]["messages"], second["channel_values"]["messages"])):
        assert a is not b
    first["versions_seen"]["llm"]["messages"] = 2  # LangGraph's loop updates its checkpoint in place
    first["channel_values"]["messages"].append(AIMessage("mine"))
    assert serde.loads_typed(blob) == JsonPlusSerializer().loads_typed(blob)


def test_small_blobs_old_ones_and_ones_past_the_size_bound_are_deserialized_anew(monkeypatch):
    def message(serde: MemoSerializer, blob: tuple[str, bytes]) -> HumanMessage:
        return serde.loads_typed(blob)["channel_values"]["messages"][0]

    small = checkpoint_blob("short")
    serde = MemoSerializer()
    assert message(serde, small) is not message(serde, small)

    now = [100.0]
    monkeypatch.setattr(load_memo, "monotonic", lambda: now[0])
    blob = checkpoint_blob()
    kept = message(serde, blob)
    now[0] += load_memo.KEEP_S / 2
    assert message(serde, blob) is kept
    now[0] += load_memo.KEEP_S
    assert message(serde, blob) is not kept

    bounded, other = MemoSerializer(max_bytes=len(blob[1])), checkpoint_blob(LONG + "!")
    kept = message(bounded, blob)
    assert message(bounded, other) is not None and message(bounded, blob) is not kept, "the oldest went first"


def test_a_clone_for_another_allowlist_keeps_what_it_loads_apart():
    strict, blob = MemoSerializer(allowed_msgpack_modules=None), checkpoint_blob()
    clone = strict.with_msgpack_allowlist([("langchain_core", "messages", "human", "HumanMessage")])
    assert isinstance(clone, MemoSerializer) and clone is not strict
    assert strict.loads_typed(blob)["channel_values"]["messages"][0] is not clone.loads_typed(blob)["channel_values"]["messages"][0]


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
async def test_a_run_the_service_starts_deserializes_its_threads_checkpoint_once(tmp_path, monkeypatch, scheme):
    """The service's check, the settling step and LangGraph's load read the same checkpoint:
    its blob is deserialized once, and the run ends on the same state as without the memo."""
    url = "memory://" if scheme == "memory" else f"sqlite:///{tmp_path / 'c.db'}"
    cfg = {"configurable": {"thread_id": "long"}}
    deserialized: list[int] = []
    loads = JsonPlusSerializer.loads_typed

    def counted(self, data):
        if len(data[1]) >= MIN_BYTES:
            deserialized.append(len(data[1]))
        return loads(self, data)

    async with open_checkpointer(url) as saver:
        assert isinstance(saver.serde, MemoSerializer)
        graph = build_graph(ScriptedModel(replies=[Reply("first"), Reply("second")]), [], saver, Settings(system_prompt=""))
        await graph.ainvoke({"messages": [HumanMessage(LONG)]}, cfg)
        monkeypatch.setattr(JsonPlusSerializer, "loads_typed", counted)
        assert await thread_status(graph, "long") == "idle"
        events = [e async for e in run_events(graph, {"messages": [HumanMessage("again")]}, cfg, refuse_waiting=True)]
        loaded_by_the_run = len(deserialized)
        monkeypatch.setattr(JsonPlusSerializer, "loads_typed", loads)
        saver.serde = JsonPlusSerializer()
        state = await graph.aget_state(cfg)

    assert events[-1].type == "run_end" and events[-1].status == "done"
    assert loaded_by_the_run == 1, deserialized
    assert [m.text for m in state.values["messages"]] == [LONG, "first", "again", "second"]
