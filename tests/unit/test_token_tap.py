"""The tokens' own path (``agent_ng.nodes.tokens``): the events a run streams through it are the
ones messages mode gives, in the same order against tool events and checkpoint writes; whoever
asks for messages mode or ``astream_events`` still gets every token, in order, once; and a graph
run inside a tool adds none of its tokens to the run's answer, as in messages mode."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import AgentEvent, Part, run_events, stream
from agent_ng.tools import progress
from tests.helpers.graph_runs import GUARD_S, ask, config, settings
from tests.helpers.scripted_model import Reply, ScriptedModel

WORDS = "The answer is forty two, found by the tool."


@tool
async def lookup(topic: str) -> str:
    """Looks a topic up, reporting progress."""
    for step in (1, 2, 3):
        progress.report(step / 3, f"step {step}")
        await asyncio.sleep(0)
    return f"facts about {topic}"


class TimelineSaver(InMemorySaver):
    """Notes each checkpoint write in the timeline the test's reader notes its events in."""

    def __init__(self, timeline: list[tuple]) -> None:
        super().__init__()
        self.timeline = timeline

    async def aput(self, config, checkpoint, metadata, new_versions):
        self.timeline.append(("checkpoint", metadata.get("step")))
        return await super().aput(config, checkpoint, metadata, new_versions)


def script() -> ScriptedModel:
    return ScriptedModel(
        replies=[
            Reply(text="Let me look that up first.", tool_calls=[("lookup", {"topic": "life"})]),
            Reply(text=WORDS),
        ]
    )


def seen(event: AgentEvent) -> tuple:
    return (event.type, event.text, event.name, event.progress, event.content, event.status)


async def timeline(parts: tuple[str, ...]) -> list[tuple]:
    """What one run's reader saw, with the checkpoint writes where they happened."""
    noted: list[tuple] = []
    graph = build_graph(script(), tools=[lookup], checkpointer=TimelineSaver(noted), settings=settings())
    async with asyncio.timeout(GUARD_S):
        async for item in run_events(graph, ask(), config(), parts=parts):
            if isinstance(item, AgentEvent):
                noted.append(seen(item))
    return noted


async def test_the_tapped_run_streams_what_messages_mode_streams_in_the_same_order():
    tapped = await timeline(())
    through_langgraph = await timeline(("messages",))

    assert tapped == through_langgraph
    content = [t[1] for t in tapped if t[0] == "content"]
    assert "".join(content) == "Let me look that up first." + WORDS
    assert len(content) == len("Let me look that up first.".split()) + len(WORDS.split())
    kinds = [t[0] for t in tapped]
    assert kinds.index("tool_progress") < kinds.index("tool_complete") < len(kinds) - 1 - kinds[::-1].index("checkpoint")


async def test_messages_mode_and_astream_events_still_get_every_token_once_in_order():
    words = [w + " " for w in WORDS.split()]
    words[-1] = words[-1].strip()

    graph = build_graph(ScriptedModel(replies=[Reply(text=WORDS)]), tools=[], checkpointer=InMemorySaver(), settings=settings())
    in_messages = [
        c.content
        async for c, meta in graph.astream(ask(), config("m"), stream_mode="messages")
        if isinstance(c, AIMessageChunk) and c.content and meta["langgraph_node"] == "llm"
    ]
    graph = build_graph(ScriptedModel(replies=[Reply(text=WORDS)]), tools=[], checkpointer=InMemorySaver(), settings=settings())
    in_events = [
        e["data"]["chunk"].content
        async for e in graph.astream_events(ask(), config("e"), version="v2")
        if e["event"] == "on_chat_model_stream" and e["data"]["chunk"].content
    ]
    graph = build_graph(ScriptedModel(replies=[Reply(text=WORDS)]), tools=[], checkpointer=InMemorySaver(), settings=settings())
    parts, contents = [], []
    async for item in run_events(graph, ask(), config("p"), parts=("messages",)):
        if isinstance(item, Part) and item.chunk[0].content:
            parts.append(item.chunk[0].content)
        elif isinstance(item, AgentEvent) and item.type == "content":
            contents.append(item.text)

    assert in_messages == in_events == parts == contents == words


async def delegating_to(inner) -> list[AgentEvent]:
    """The events of a run whose one tool call runs the graph ``inner``, then answers "outer words"."""

    @tool
    async def delegate(question: str, config: RunnableConfig) -> str:
        """Asks another agent."""
        answer = await inner.ainvoke({"messages": [HumanMessage(question)]}, config)
        return answer["messages"][-1].text

    model = ScriptedModel(replies=[Reply(tool_calls=[("delegate", {"question": "q"})]), Reply(text="outer words")])
    graph = build_graph(model, tools=[delegate], checkpointer=InMemorySaver(), settings=settings())
    async with asyncio.timeout(GUARD_S):
        return [e async for e in stream(graph, ask(), config())]


async def test_a_graph_run_inside_a_tool_adds_none_of_its_tokens_to_the_answer():
    inner = build_graph(ScriptedModel(replies=[Reply(text="inner words")]), tools=[], settings=settings())
    events = await delegating_to(inner)

    assert "".join(e.text for e in events if e.type == "content") == "outer words"
    assert [e.content for e in events if e.type == "tool_result"] == ["inner words"]


async def test_the_graph_moves_to_its_next_step_only_when_the_reader_asks_for_more():
    started = asyncio.Event()

    @tool
    async def mark() -> str:
        """Notes that it started."""
        started.set()
        return "marked"

    model = ScriptedModel(replies=[Reply(text="Marking.", tool_calls=[("mark", {})]), Reply(text="Done.")])
    graph = build_graph(model, tools=[mark], checkpointer=InMemorySaver(), settings=settings())
    events = stream(graph, ask(), config())
    async with asyncio.timeout(GUARD_S):
        async for event in events:
            if event.type == "tool_call":
                break
        for _ in range(100):  # the loop runs everything that is ready, many times over
            await asyncio.sleep(0)
        assert not started.is_set(), "the tool step started while the reader held the model step's last event"
        rest = [e.type async for e in events]
    assert started.is_set()
    assert rest[-1] == "run_end"


async def test_a_graph_run_inside_a_tool_adds_none_of_its_tool_events():
    @tool
    def double(x: int) -> int:
        """Doubles x."""
        return 2 * x

    inner = build_graph(
        ScriptedModel(replies=[Reply(tool_calls=[("double", {"x": 2})]), Reply(text="4")]), tools=[double], settings=settings()
    )
    events = await delegating_to(inner)

    assert {e.name for e in events if e.tool_call_id} == {"delegate"}
    assert [e.type for e in events if e.tool_call_id][-2:] == ["tool_result", "tool_complete"]
