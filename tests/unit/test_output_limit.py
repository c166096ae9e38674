"""The output limit: any tool's result cut to its bytes with a note, before anything keeps it."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.engine.output_limit import bounded
from agent_ng.engine.recorded_results import deserialize
from agent_ng.engine.result_cache import cache_key
from agent_ng.engine.store import MemoryToolStore
from agent_ng.engine.tool_calls import notes
from agent_ng.graph.agent import build_graph
from agent_ng.tools.registry import configure
from tests.helpers.graph_runs import ask, collect, config, of_type, settings, tool_messages
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

TEN_MB = 10_000_000


def size(content: str | list) -> int:
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return len(text.encode())


@pytest.mark.parametrize("limit", range(1000, 1004))
def test_text_is_cut_on_a_character_boundary_and_says_how_big_it_was(limit):
    text = "aé€😀" * 1000  # 1, 2, 3 and 4 bytes: each limit ends inside a different character
    cut = bounded(ToolMessage(text, tool_call_id="c"), limit)

    kept, note = cut.content.split("\n[cut:")
    assert text.startswith(kept)
    assert size(cut.content) <= limit < size(cut.content) + size(text[len(kept)])
    assert "the result was 10,000 bytes, over this tool's limit of" in note
    assert notes(cut)["cut_from_bytes"] == 10_000


def test_a_result_within_the_limit_is_left_as_it_is():
    message = ToolMessage("é" * 500, tool_call_id="c", artifact={"rows": 3})
    assert bounded(message, 1024) is message


def test_blocks_past_the_limit_are_left_out_and_an_artifact_that_does_not_fit_is_dropped():
    image = {"type": "image", "base64": "A" * 5000, "mime_type": "image/png"}
    blocks = [{"type": "text", "text": "x" * 600}, {"type": "text", "text": "y" * 600}, image]
    cut = bounded(ToolMessage(blocks, tool_call_id="c", artifact={"raw": "z" * 5000}), 1024)

    assert size(cut.content) <= 1024 + len('[{"type": "text", "text": ""}, ]') * 3
    assert cut.content[0] == blocks[0] and set(cut.content[1]["text"]) == {"y"}
    assert "over this tool's limit of 1,024" in cut.content[-1]["text"]
    assert len(cut.content) == 3 and cut.artifact is None


async def test_a_user_tool_returning_10_mb_is_cut_before_it_is_reported_recorded_or_cached():
    @tool
    def dump(part: str) -> str:
        """Ten megabytes of one part."""
        return part * TEN_MB

    @tool
    def dump_small(part: str) -> str:
        """Ten megabytes of one part, with a smaller limit of its own."""
        return part * TEN_MB

    configure(dump, cacheable=True)
    configure(dump_small, max_output_bytes=2000)
    store = MemoryToolStore()
    model = ScriptedModel(
        replies=[calls(("dump", {"part": "é"}), ("dump_small", {"part": "x"})), Reply(text="ok")]
    )
    checkpointer = InMemorySaver()
    graph = build_graph(model, [dump, dump_small], checkpointer, settings(), tool_store=store)
    events = await collect(graph, ask())

    bound = settings().tool_max_output_bytes
    stored = tool_messages((await graph.aget_state(config())).values["messages"])
    by_name = {m.name: m for m in stored.values()}
    assert size(by_name["dump"].content) <= bound < size(by_name["dump"].content) + 200
    assert "the result was 20,000,000 bytes" in by_name["dump"].content
    assert size(by_name["dump_small"].content) <= 2000
    assert "the result was 10,000,000 bytes, over this tool's limit of 2,000" in by_name[
        "dump_small"
    ].content
    assert all(size(m.content) <= bound for m in tool_messages(model.seen[1]).values())
    assert all(len(e.content) < bound for e in of_type(events, "tool_result"))

    [cached] = [await store.cached(cache_key("dump", {"part": "é"}), now=0.0)]
    assert cached is not None and size(cached.content) <= bound
    recorded = [deserialize(raw) for raw, _ in store._results.values()]
    assert len(recorded) == 2 and all(size(m.content) <= bound for m in recorded)
