"""The node's merge of a streamed answer (``agent_ng.nodes.llm.merge``) joins runs of text-only
chunks before langchain-core merges the rest: the stored message must be exactly the one
``add_ai_message_chunks`` makes of every chunk, whatever mix of text, content blocks, tool-call
chunks, metadata, usage and ids the model sent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.messages.utils import message_chunk_to_message

from agent_ng.nodes.llm import joined_text, merge

texts = st.text(alphabet="ab \n", max_size=4)
blocks = st.lists(st.one_of(texts, st.builds(lambda t: {"type": "text", "text": t, "index": 0}, texts)), max_size=2)


@st.composite
def chunks(draw) -> AIMessageChunk:
    fields = {"content": draw(st.one_of(texts, texts, texts, blocks))}
    fields["id"] = draw(st.sampled_from([None, "lc_run-1", "lc_run-1", "lc_run-2", "chatcmpl-9"]))
    if draw(st.booleans()) and draw(st.booleans()):
        fields["response_metadata"] = {"model_name": draw(texts)}
    if draw(st.integers(0, 5)) == 0:
        fields["additional_kwargs"] = {"refusal": draw(texts)}
    if draw(st.integers(0, 5)) == 0:
        fields["tool_call_chunks"] = [{"name": "f", "args": draw(texts), "id": "c1", "index": 0}]
    if draw(st.integers(0, 8)) == 0:
        fields["usage_metadata"] = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    if draw(st.integers(0, 8)) == 0:
        fields["chunk_position"] = "last"
    return AIMessageChunk(**fields)


@settings(max_examples=300, deadline=None)
@given(st.lists(chunks(), min_size=2, max_size=12))
def test_the_merge_is_langchain_cores_whatever_the_chunks(stream):
    assert merge(stream) == message_chunk_to_message(add_ai_message_chunks(*stream))


def test_a_text_answer_is_merged_from_one_chunk_per_run_of_text():
    stream = [AIMessageChunk(content=f"w{i} ", id="lc_run-1") for i in range(50)]
    stream.append(AIMessageChunk(content="", id="lc_run-1", chunk_position="last"))

    assert [c.content for c in joined_text(stream)] == ["".join(f"w{i} " for i in range(50)), ""]
