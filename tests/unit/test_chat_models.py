"""Any LangChain chat model drives the graph, and ``AGENT_MODEL`` names one as ``provider:model``.

The models here are langchain-core's own fakes and two small ones of ours, each a shape real
integrations come in: streaming text, answering whole (no ``_stream``), unable to bind tools,
or sending whole ``tool_calls`` instead of ``tool_call_chunks``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import PrivateAttr

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import AgentEvent, stream
from agent_ng.models.chat import OFFLINE_NOTICE, ModelConfigError, chat_model, split_model
from agent_ng.models.offline import OfflineChatModel
from agent_ng.nodes.llm import merge
from agent_ng.settings import Settings
from agent_ng.tools.calculator import calculator

GUARD_S = 10
BASE_URL = "http://127.0.0.1:9/v1"
USAGE = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}


def settings(**overrides) -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="", **overrides)


def config(thread: str = "t1") -> dict:
    return {"configurable": {"thread_id": thread}}


def call(expression: str, id_: str) -> dict[str, Any]:
    return {"name": "calculator", "args": {"expression": expression}, "id": id_, "type": "tool_call"}


TWO_CALLS = [call("2+3", "call_a"), call("4*5", "call_b")]


async def run(model, question: str = "2+3 and 4*5?", thread: str = "t1"):
    graph = build_graph(model, tools=[calculator], checkpointer=InMemorySaver(), settings=settings())
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage(question)]}, config(thread))]
    history = (await graph.aget_state(config(thread))).values["messages"]
    return events, history


def per_call(events: list[AgentEvent]) -> dict[str, list[str]]:
    calls: dict[str, list[str]] = {}
    for event in events:
        if event.tool_call_id:
            calls.setdefault(event.tool_call_id, []).append(event.type)
    return calls


def assert_two_calculator_calls_then(
    answer: str, events: list[AgentEvent], history: list[BaseMessage], *, shown: str | None = None
) -> None:
    """Both calls ran, each with its whole event sequence; the history is the tool-calling turn.
    ``shown``: the text of every content event (default: the answer's)."""
    assert per_call(events) == {
        "call_a": ["tool_call", "tool_start", "tool_result", "tool_complete"],
        "call_b": ["tool_call", "tool_start", "tool_result", "tool_complete"],
    }
    results = {e.tool_call_id: e.content for e in events if e.type == "tool_result"}
    assert results == {"call_a": "5", "call_b": "20"}
    assert "".join(e.text for e in events if e.type == "content") == (answer if shown is None else shown)
    assert events[-1].type == "run_end" and events[-1].status == "done"

    assert [m.type for m in history] == ["human", "ai", "tool", "tool", "ai"]
    asked = history[1]
    assert [(c["id"], c["args"]) for c in asked.tool_calls] == [
        ("call_a", {"expression": "2+3"}),
        ("call_b", {"expression": "4*5"}),
    ]
    assert asked.invalid_tool_calls == []
    assert {(m.tool_call_id, m.content) for m in history[2:4] if isinstance(m, ToolMessage)} == {
        ("call_a", "5"),
        ("call_b", "20"),
    }
    assert history[-1].content == answer and history[-1].tool_calls == []


async def test_generic_fake_model_streams_a_plain_answer(caplog):
    text = "The answer is forty two, as always."
    model = GenericFakeChatModel(messages=iter([AIMessage(text)]))

    with caplog.at_level(logging.WARNING, logger="agent_ng"):
        events, history = await run(model, "what is the answer?")

    contents = [e for e in events if e.type == "content"]
    assert len(contents) == len(text.split(" ")) * 2 - 1  # words and the spaces between them
    assert "".join(e.text for e in contents) == text
    assert all(e.node == "llm" for e in contents)
    assert not [e for e in events if e.tool_call_id]
    assert events[-1].type == "run_end" and events[-1].status == "done"
    assert [(m.type, m.content) for m in history] == [("human", "what is the answer?"), ("ai", text)]
    assert "GenericFakeChatModel cannot bind tools" in caplog.text


async def test_a_model_that_cannot_bind_tools_asks_for_two_in_parallel():
    model = FakeMessagesListChatModel(
        responses=[AIMessage("", tool_calls=TWO_CALLS), AIMessage("5 and 20.")]
    )

    events, history = await run(model)

    assert_two_calculator_calls_then("5 and 20.", events, history)


class WholeAnswers(BaseChatModel):
    """A model with only ``_generate``: ``astream`` yields each answer as one whole message."""

    answers: list[AIMessage]
    _calls: int = PrivateAttr(default=0)
    _bound: list[str] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "whole-answers"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        self._bound += [t.name for t in tools]
        return self

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        answer = self.answers[self._calls]
        self._calls += 1
        return ChatResult(generations=[ChatGeneration(message=answer.model_copy())])


async def test_a_model_without_streaming_asks_for_parallel_tools_then_answers():
    model = WholeAnswers(
        answers=[
            AIMessage(
                "",
                tool_calls=TWO_CALLS,
                id="answer-1",
                usage_metadata=USAGE,
                response_metadata={"finish_reason": "tool_calls", "model_name": "whole"},
            ),
            AIMessage("2+3 is 5 and 4*5 is 20.", id="answer-2", usage_metadata=USAGE),
        ]
    )

    events, history = await run(model)

    assert model._bound == ["calculator"]
    assert_two_calculator_calls_then("2+3 is 5 and 4*5 is 20.", events, history)
    assert [m.id for m in history if m.type == "ai"] == ["answer-1", "answer-2"]
    assert history[1].usage_metadata == USAGE
    assert history[1].response_metadata == {"finish_reason": "tool_calls", "model_name": "whole"}
    assert events[-1].usage == {k: 2 * v for k, v in USAGE.items()}


class WholeToolCallChunks(BaseChatModel):
    """A streaming model whose chunks carry whole ``tool_calls``: one built with them (so
    langchain-core derives unindexed ``tool_call_chunks``), one given them afterwards (so it has
    none at all, as ``model_copy(update=...)`` leaves it)."""

    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "whole-tool-calls"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError("streams only")

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs) -> AsyncIterator[ChatGenerationChunk]:
        self._calls += 1
        if self._calls == 1:
            without_chunks = AIMessageChunk(content="").model_copy(update={"tool_calls": TWO_CALLS[:1]})
            assert without_chunks.tool_call_chunks == []
            chunks = [
                AIMessageChunk(content="Computing. "),
                without_chunks,
                AIMessageChunk(content="", tool_calls=TWO_CALLS[1:]),
                AIMessageChunk(content="", usage_metadata=USAGE, chunk_position="last"),
            ]
        else:
            chunks = [AIMessageChunk(content="5 "), AIMessageChunk(content="and 20.", chunk_position="last")]
        for chunk in chunks:
            yield ChatGenerationChunk(message=chunk)


async def test_chunks_with_whole_tool_calls_fan_out_every_call():
    events, history = await run(WholeToolCallChunks())

    assert_two_calculator_calls_then("5 and 20.", events, history, shown="Computing. 5 and 20.")
    assert history[1].content == "Computing. "
    assert history[1].usage_metadata == USAGE


def test_merge_keeps_a_whole_answer_and_mixes_it_with_chunks():
    whole = AIMessage("done", tool_calls=TWO_CALLS, id="w", usage_metadata=USAGE, response_metadata={"a": 1})
    assert merge([whole]) is whole

    mixed = merge([AIMessageChunk(content="al", id="w"), whole])
    assert type(mixed) is AIMessage
    assert mixed.content == "aldone"
    assert mixed.tool_calls == TWO_CALLS
    assert (mixed.id, mixed.usage_metadata, mixed.response_metadata) == ("w", USAGE, {"a": 1})


# -- AGENT_MODEL="provider:model" ---------------------------------------------------------


@pytest.fixture
def no_openai_env(monkeypatch, tmp_path):
    """Neither the environment nor a ``.env`` file configures OpenAI."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENT_OPENAI_API_KEY", "AGENT_OPENAI_BASE_URL", "AGENT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("spec", "name"),
    [("openai:gpt-4o-mini", "gpt-4o-mini"), ("gpt-4o-mini", "gpt-4o-mini"), ("llama3.1:8b", "llama3.1:8b")],
)
def test_openai_models_by_prefix_by_plain_name_and_with_an_ollama_tag(no_openai_env, spec, name):
    model = chat_model(settings(model=spec, openai_base_url=BASE_URL))

    assert type(model) is ChatOpenAI
    assert model.model_name == name
    assert model.openai_api_base == BASE_URL
    assert model.streaming is True and model.stream_usage is True


def test_a_plain_name_is_never_sent_to_a_provider_guessed_from_it():
    assert split_model("mistral-7b") == ("openai", "mistral-7b")
    assert split_model("claude-x") == ("openai", "claude-x")
    assert split_model("anthropic:claude-x") == ("anthropic", "claude-x")
    assert split_model("openai:ft:gpt-4o:org") == ("openai", "ft:gpt-4o:org")


@pytest.mark.parametrize("spec", ["openai:gpt-4o-mini", "gpt-4o-mini"])
def test_openai_without_a_key_or_base_url_is_the_offline_model(no_openai_env, caplog, spec):
    with caplog.at_level(logging.WARNING, logger="agent_ng"):
        model = chat_model(settings(model=spec, openai_api_key=None, openai_base_url=None))

    assert isinstance(model, OfflineChatModel)
    assert [r.getMessage() for r in caplog.records] == [OFFLINE_NOTICE]


def test_another_provider_whose_package_is_installed(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.invalid")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")

    model = chat_model(settings(model="azure_openai:my-deployment"))

    assert type(model) is AzureChatOpenAI
    assert model.model_name == "my-deployment"


def test_a_provider_whose_package_is_missing_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)  # missing even where installed

    with pytest.raises(ModelConfigError) as info:
        chat_model(settings(model="anthropic:claude-x"))

    assert str(info.value) == (
        "AGENT_MODEL=anthropic:claude-x needs the langchain-anthropic package: pip install langchain-anthropic"
    )
    assert isinstance(info.value, ValueError)

    with pytest.raises(ModelConfigError, match=r"^model 'anthropic:claude-x' needs the langchain-anthropic package"):
        build_graph("anthropic:claude-x", tools=[], settings=settings())


def test_a_provider_that_cannot_be_made_is_one_line(monkeypatch):
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_AD_TOKEN", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ModelConfigError) as info:
        chat_model(settings(model="azure_openai:my-deployment"))

    assert str(info.value).startswith("AGENT_MODEL=azure_openai:my-deployment cannot be used: ")
    assert "\n" not in str(info.value)


async def test_build_graph_takes_a_provider_string(no_openai_env):
    graph = build_graph("openai:gpt-4o-mini", tools=[calculator], checkpointer=InMemorySaver(), settings=settings())

    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage("what is 6*7?")]}, config())]

    assert events[-1].status == "done"
    assert "42" in "".join(e.text for e in events if e.type == "content")  # the offline model's sum
