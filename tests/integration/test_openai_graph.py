"""The graph driven by the real ``ChatOpenAI`` against a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import threading

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.models.chat import chat_model
from agent_ng.settings import Settings
from agent_ng.tools.calculator import calculator
from agent_ng.tools.primes import count_primes
from tests.helpers.openai_server import Reply

GUARD_S = 20


def server_settings(base_url: str) -> Settings:
    return Settings(
        checkpoint_url="memory://", system_prompt="Be brief.", openai_base_url=base_url, model="test-model"
    )


async def test_chatopenai_streams_parallel_tool_calls_and_the_answer_end_to_end(openai_server):
    openai_server.script.replies += [
        Reply(tool_calls=[("calculator", {"expression": "17*23"}), ("count_primes", {"below": 200})]),
        Reply(text="17*23 is 391 and there are 46 primes below 200."),
    ]
    settings = server_settings(openai_server.base_url)
    model = chat_model(settings)
    assert type(model).__name__ == "ChatOpenAI"
    graph = build_graph(model, tools=[calculator, count_primes], settings=settings)

    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage("go")]}, {})]

    calls = {e.name: e for e in events if e.type == "tool_call"}
    assert calls["calculator"].args == {"expression": "17*23"}
    assert calls["count_primes"].args == {"below": 200}
    results = {e.name: e.content for e in events if e.type == "tool_result"}
    assert results == {"calculator": "391", "count_primes": "46"}
    content = [e.text for e in events if e.type == "content"]
    assert len(content) > 5
    assert "".join(content) == "17*23 is 391 and there are 46 primes below 200."
    assert events[-1].type == "run_end" and events[-1].status == "done"
    assert events[-1].usage["total_tokens"] > 0

    first, second = openai_server.script.requests
    assert {t["function"]["name"] for t in first["tools"]} == {"calculator", "count_primes"}
    assert first["stream"] is True and first["messages"][0] == {"role": "system", "content": "Be brief."}
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert sorted(m["content"] for m in tool_messages) == ["391", "46"]
    asked = [c["id"] for m in second["messages"] if m["role"] == "assistant" for c in m["tool_calls"]]
    assert sorted(m["tool_call_id"] for m in tool_messages) == sorted(asked)


async def test_first_token_reaches_the_event_stream_while_the_server_is_still_sending(openai_server):
    release = threading.Event()
    openai_server.script.replies.append(
        Reply(text="one two three four five six", hold_after=3, release=release)
    )
    settings = server_settings(openai_server.base_url)
    graph = build_graph(chat_model(settings), tools=[], settings=settings)

    texts: list[str] = []
    async with asyncio.timeout(GUARD_S):
        async for event in stream(graph, {"messages": [HumanMessage("count")]}, {}):
            if event.type == "content":
                texts.append(event.text)
                if len(texts) == 1:
                    assert not release.is_set()
                    release.set()
    assert "".join(texts) == "one two three four five six"


async def test_agent_model_in_provider_form_drives_the_server_through_the_graph(openai_server, monkeypatch):
    monkeypatch.setenv("AGENT_MODEL", "openai:gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai_server.script.replies += [
        Reply(tool_calls=[("calculator", {"expression": "6*7"}), ("calculator", {"expression": "2**10"})]),
        Reply(text="6*7 is 42 and 2**10 is 1024."),
    ]
    settings = Settings(checkpoint_url="memory://", system_prompt="Be brief.")
    assert settings.model == "openai:gpt-4o-mini"
    graph = build_graph(tools=[calculator], checkpointer=InMemorySaver(), settings=settings)
    config = {"configurable": {"thread_id": "provider-form"}}

    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage("6*7 and 2**10?")]}, config)]

    assert sorted(e.content for e in events if e.type == "tool_result") == ["1024", "42"]
    assert "".join(e.text for e in events if e.type == "content") == "6*7 is 42 and 2**10 is 1024."
    assert events[-1].type == "run_end" and events[-1].status == "done"
    assert [r["model"] for r in openai_server.script.requests] == ["gpt-4o-mini", "gpt-4o-mini"]
    history = (await graph.aget_state(config)).values["messages"]
    assert [m.type for m in history] == ["human", "ai", "tool", "tool", "ai"]
    assert history[-1].content == "6*7 is 42 and 2**10 is 1024."


async def test_build_graph_takes_the_provider_string_itself(openai_server):
    openai_server.script.replies.append(Reply(text="Hello there."))
    settings = server_settings(openai_server.base_url)
    graph = build_graph("openai:gpt-4o-mini", tools=[], settings=settings)

    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage("hi")]}, {})]

    assert "".join(e.text for e in events if e.type == "content") == "Hello there."
    assert [r["model"] for r in openai_server.script.requests] == ["gpt-4o-mini"]
