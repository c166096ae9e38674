"""A silent model times out, and a stop stops even a model that swallows the cancellation.

The models here are small and deterministic: one waits on an ``Event`` nobody sets (silence),
one catches every ``CancelledError`` between its chunks and goes on, as ``asyncio.wait_for``
does on Python 3.11 when a chunk is ready at the moment of the cancel (langchain-openai wraps
each chunk in it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.models.chat import ModelTimeoutError, chat_model, model_name
from agent_ng.models.offline import OfflineChatModel
from agent_ng.nodes.llm import stream_within
from agent_ng.nodes.memory import make_memory
from agent_ng.settings import Settings

TIMEOUT_S = 0.2
MARGIN_S = 1.0
GUARD_S = 10
WORDS = 5_000


class Playing(BaseChatModel):
    """Each call plays the next plan: ``words`` chunks, going silent after ``silent_after`` of
    them; with ``swallow``, a cancellation between chunks is caught and the stream goes on."""

    plans: list[dict[str, Any]]
    model_name: str = "playing-1"

    @property
    def _llm_type(self) -> str:
        return "playing"

    async def _astream(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        plan = self.plans.pop(0)
        if "raise" in plan:
            raise plan["raise"]
        for n in range(plan["words"]):
            if n == plan.get("silent_after"):
                await asyncio.Event().wait()
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                if not plan.get("swallow"):
                    raise
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=f"w{n} "))
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError


def graph_of(model: BaseChatModel):
    settings = Settings(checkpoint_url="memory://", system_prompt="", model_timeout_s=TIMEOUT_S)
    return build_graph(model, tools=[], checkpointer=InMemorySaver(), settings=settings)


CONFIG = {"configurable": {"thread_id": "t"}}


async def run(graph, question: str) -> tuple[list, BaseException | None]:
    events, error = [], None
    async with asyncio.timeout(GUARD_S):
        try:
            async for event in stream(graph, {"messages": [HumanMessage(question)]}, CONFIG):
                events.append(event)
        except Exception as e:
            error = e
    return events, error


@pytest.mark.parametrize("silent_after", [0, 3], ids=["before-the-first-chunk", "between-chunks"])
async def test_a_silent_model_ends_the_run_with_a_timeout_error_and_the_thread_goes_on(silent_after):
    graph = graph_of(Playing(plans=[{"words": 10, "silent_after": silent_after}, {"words": 2}]))

    started = time.perf_counter()
    events, error = await run(graph, "hello?")
    took = time.perf_counter() - started
    state = await graph.aget_state(CONFIG)
    again, _ = await run(graph, "and now?")

    assert isinstance(error, ModelTimeoutError)
    end = events[-1]
    assert end.type == "run_end" and end.status == "error"
    assert end.error == f"ModelTimeoutError: {error}"
    assert "'playing-1'" in end.error and f"{TIMEOUT_S:g} s" in end.error and "AGENT_MODEL_TIMEOUT_S" in end.error
    assert ("before its first chunk" if silent_after == 0 else "after chunk 3") in end.error
    assert TIMEOUT_S <= took < TIMEOUT_S + MARGIN_S
    assert not state.tasks, "the thread is left idle, not waiting for agent-ng resume"
    if silent_after:
        shown = "".join(e.text for e in events if e.type == "content")
        stored = state.values["messages"][-1]
        assert shown == stored.text == "w0 w1 w2 " and stored.response_metadata["finish_reason"] == "timeout"
    assert again[-1].status == "done" and "".join(e.text for e in again if e.type == "content") == "w0 w1 "


async def test_a_timeout_the_model_raises_itself_is_its_own_error_not_silence():
    graph = graph_of(Playing(plans=[{"raise": TimeoutError("the provider's own timeout")}]))

    events, error = await run(graph, "hello?")

    assert type(error) is TimeoutError
    assert events[-1].error == "TimeoutError: the provider's own timeout"


async def test_the_silence_is_counted_from_the_last_chunk_not_from_the_start():
    async def slow_but_steady() -> AsyncIterator[AIMessageChunk]:
        for n in range(5):
            await asyncio.sleep(TIMEOUT_S / 2)
            yield AIMessageChunk(content=str(n))

    chunks = await stream_within(slow_but_steady(), TIMEOUT_S, "steady")

    assert "".join(c.text for c in chunks) == "01234"


async def test_a_stop_ends_a_model_that_swallows_cancellations_and_stores_what_was_shown():
    graph = graph_of(Playing(plans=[{"words": WORDS, "swallow": True}]))
    shown: list[str] = []

    async def consume():
        async for event in stream(graph, {"messages": [HumanMessage("go")]}, CONFIG):
            if event.type == "content":
                shown.append(event.text)
                if len(shown) == 20:
                    task.cancel()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(task, return_exceptions=True)
    answer = (await graph.aget_state(CONFIG)).values["messages"][-1]

    assert task.cancelled()
    assert isinstance(answer, AIMessage) and answer.response_metadata.get("finish_reason") == "cancelled"
    assert answer.text == "".join(shown)
    assert len(shown) < WORDS // 2


def test_chatopenai_bounds_its_connect_by_the_model_timeout_and_has_no_chunk_timeout_of_its_own():
    settings = Settings(openai_base_url="http://127.0.0.1:9/v1", model="gpt-4o-mini", model_timeout_s=7)

    model = chat_model(settings)

    assert model.request_timeout == httpx.Timeout(None, connect=7)
    assert model.stream_chunk_timeout is None
    assert model_name(model) == "gpt-4o-mini"
    assert model_name(OfflineChatModel()) == "agent-ng-offline"


async def test_a_silent_summary_call_times_out_like_the_answer():
    class Mute(BaseChatModel):
        """Answers nothing, ever."""

        @property
        def _llm_type(self) -> str:
            return "mute"

        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            await asyncio.Event().wait()

        def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            raise NotImplementedError

    memory = make_memory(Mute(), max_tokens=2, summarize=True, timeout_s=TIMEOUT_S, token_counter=len)
    history = [HumanMessage("one", id="1"), AIMessage("first", id="2"), HumanMessage("two", id="3")]
    started = time.perf_counter()
    with pytest.raises(ModelTimeoutError, match="AGENT_MODEL_TIMEOUT_S"):
        async with asyncio.timeout(GUARD_S):
            await memory([], {"messages": history})
    assert time.perf_counter() - started < TIMEOUT_S + MARGIN_S
