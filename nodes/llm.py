"""The model call: streams the answer token by token and asks for tools.

The node consumes ``model.astream`` so LangGraph's messages mode forwards each chunk the moment
the model makes it; the chunks are merged once at the end into the message that is stored.
Any LangChain chat model works: one that does not stream yields a single whole ``AIMessage``,
one may send whole ``tool_calls`` rather than ``tool_call_chunks``, and one that cannot bind
tools (``NotImplementedError``) is called without them; the merge takes all of these.
It also keeps the promises the graph relies on:

- a turn stops after ``max_steps`` model calls with a plain answer saying so, instead of
  raising ``GraphRecursionError``;
- a tool call whose arguments the model garbled (``invalid_tool_calls``) gets an error
  ``ToolMessage`` at once, so the history stays valid and the model can try again;
- each tool call has an id of its own in the thread (``with_unique_call_ids``), so every call
  runs and keeps its result even when the model repeats an id;
- a model silent for ``timeout_s`` (``AGENT_MODEL_TIMEOUT_S``: to its first chunk, or between
  two) ends the run with ``ModelTimeoutError``; a stop ends the stream at the next chunk even
  when the model's own code swallowed the cancellation, and a fast model does not hold the
  event loop (``stream_within``).

The history is checked against its rule (``agent_ng.nodes.history``) first: a thread broken by an older
version or by hand is repaired with explicit "not completed" results, and the repaired history
is stored, so the model is never sent a tool call without its result.

What the model is sent comes from ``memory`` (``agent_ng.nodes.memory``: the history trimmed to a token
budget); the stored history is not cut.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph.message import REMOVE_ALL_MESSAGES

from agent_ng.models.chat import ModelTimeoutError, model_name
from agent_ng.nodes.history import calls_of, repair, violations
from agent_ng.nodes.memory import Memory, Recall
from agent_ng.nodes.state import AgentState
from agent_ng.nodes.tokens import TokenTap, token_tap

log = logging.getLogger("agent_ng")

STEP_LIMIT_REASON = "max_steps"
FAIR_TURN_S = 0.005
"""Longest the model's stream holds the event loop before it lets other work run."""
SILENCE_SLACK = 0.01


def make_llm_node(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    *,
    max_steps: int,
    timeout_s: float,
    system_prompt: str | None = None,
    memory: Memory | None = None,
):
    """The ``llm`` node: one model call per step, streamed, its answer stored whole."""
    bound = with_tools(model, tools)
    system = [SystemMessage(system_prompt)] if system_prompt else []
    name = model_name(model)

    async def llm(state: AgentState, config: RunnableConfig) -> dict[str, list[AnyMessage]]:
        tap = token_tap(config)
        messages, repaired = valid_history(state["messages"])
        if model_turns(messages) >= max_steps:
            answer = step_limit_answer(max_steps)
            if tap is not None:  # as messages mode shows a node's answer that was not streamed
                tap.put(answer)
            return {"messages": [*repaired, answer]}
        state = {**state, "messages": messages}
        recall = await memory(system, state) if memory else Recall([*system, *messages])
        chunks = await stream_within(bound.astream(recall.messages, config), timeout_s, name, tap)
        answer = with_unique_call_ids(merge(chunks), messages)
        return {"messages": [*repaired, answer, *invalid_call_errors(answer)], **recall.update}

    return llm


async def stream_within(
    chunks: AsyncIterator[AIMessage], timeout_s: float, model: str, tap: TokenTap | None = None
) -> list[AIMessage]:
    """Every chunk of a model's stream, each within ``timeout_s`` of the one before (of the
    call, for the first); a stop ends it at the next chunk, whatever the model's code did.
    Each chunk goes to the run's ``tap`` too, when it has one (``agent_ng.nodes.tokens``).

    The check of ``cancelling()`` is for the model that swallows a cancellation: on Python 3.11
    ``asyncio.wait_for``, which langchain-openai wraps each chunk in, returns a chunk that is
    ready instead of raising, so a fast model would stream its whole answer after a stop. The
    loop gets a turn at least every ``FAIR_TURN_S``: chunks already read come without one, and a
    model sending flat out held it ~200 ms at a time; a paced model, whose every chunk waits for
    the network anyway, pays nothing for it. The deadline moves at most every ``SILENCE_SLACK``
    of the timeout (a timer moved per chunk cost 6 µs a token), so a silence ends the stream
    between 99% and 100% of ``timeout_s`` after the last chunk."""
    task = asyncio.current_task()
    stopping = task.cancelling if task is not None else lambda: 0
    clock = asyncio.get_running_loop().time
    received: list[AIMessage] = []
    slack = timeout_s * SILENCE_SLACK
    silence = asyncio.timeout(timeout_s)
    armed = turn = clock()
    try:
        async with silence, aclosing(chunks):
            async for chunk in chunks:
                if stopping():
                    raise asyncio.CancelledError
                received.append(chunk)
                if tap is not None:
                    tap.put(chunk)
                now = clock()
                if now - armed > slack:
                    silence.reschedule(now + timeout_s)
                    armed = now
                if now - turn > FAIR_TURN_S:
                    await asyncio.sleep(0)
                    turn = clock()
    except TimeoutError as e:
        if not silence.expired():
            raise
        raise ModelTimeoutError(model, timeout_s, len(received)) from e
    return received


def with_tools(model: BaseChatModel, tools: Sequence[BaseTool]) -> Runnable:
    """The model with ``tools`` bound, or as it is if it cannot bind tools."""
    if not tools:
        return model
    try:
        return model.bind_tools(tools)
    except NotImplementedError:
        log.warning("%s cannot bind tools; it is called without them", type(model).__name__)
        return model


def valid_history(messages: list[AnyMessage]) -> tuple[list[AnyMessage], list[AnyMessage]]:
    """The history to use, and the update that stores it when it had to be repaired."""
    if not (problems := violations(messages)):
        return messages, []
    log.warning("repairing a thread's history before the model call: %s", "; ".join(problems))
    fixed = repair(messages)
    return fixed, [RemoveMessage(id=REMOVE_ALL_MESSAGES), *fixed]


def model_turns(messages: Sequence[AnyMessage]) -> int:
    """Model answers since the user last spoke: the steps taken in this turn."""
    turns = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        turns += isinstance(message, AIMessage)
    return turns


def merge(chunks: Sequence[AIMessage]) -> AIMessage:
    """One message from the streamed chunks, merged once (linear, unlike summing as they come).

    A model that does not stream yields one whole ``AIMessage``: that is the answer. A chunk
    with whole ``tool_calls`` and no ``tool_call_chunks`` (which alone are merged) is rebuilt
    with them; streamed chunks are merged as they are."""
    if not chunks:
        return AIMessage(content="")
    if len(chunks) == 1 and not isinstance(chunks[0], AIMessageChunk):
        return chunks[0]
    chunks = joined_text(chunks)
    if not all(isinstance(c, AIMessageChunk) and (c.tool_call_chunks or not c.tool_calls) for c in chunks):
        chunks = [as_chunk(c) for c in chunks]
    return message_chunk_to_message(add_ai_message_chunks(*chunks))


def joined_text(chunks: Sequence[AIMessage]) -> list[AIMessage]:
    """``chunks`` with each run of text-only chunks of one id made one chunk of their text:
    what ``add_ai_message_chunks`` makes of them alike, in a join instead of a pydantic
    model per chunk, so a long answer is not merged at twice the cost (langchain-core's
    ``astream`` has merged it once already, for its callbacks)."""
    out: list[AIMessageChunk] = []
    run: list[str] = []
    joinable = False
    for chunk in chunks:
        plain = text_only(chunk)
        if plain and joinable and chunk.id == out[-1].id:
            run.append(chunk.content)
            continue
        if len(run) > 1:
            out[-1] = out[-1].model_copy(update={"content": "".join(run)})
        out.append(chunk)
        run, joinable = [chunk.content], plain
    if len(run) > 1:
        out[-1] = out[-1].model_copy(update={"content": "".join(run)})
    return out


def text_only(chunk: AIMessage) -> bool:
    """A chunk that carries text and nothing else."""
    return (
        type(chunk) is AIMessageChunk
        and type(chunk.content) is str
        and not (chunk.additional_kwargs or chunk.response_metadata or chunk.tool_call_chunks)
        and not (chunk.tool_calls or chunk.invalid_tool_calls)
        and chunk.usage_metadata is None
        and chunk.chunk_position is None
    )


def with_unique_call_ids(answer: AIMessage, history: Sequence[AnyMessage]) -> AIMessage:
    """``answer`` with a new id for each tool call whose id is missing, repeated in the answer, or
    used by an earlier call of the thread: some providers and local servers repeat ids (two
    calls of one answer, or ``call_0`` every turn), and a result finds its call by id alone."""
    taken = {call.get("id") for message in history for call in calls_of(message)}
    fixed: dict[str, list] = {"tool_calls": [], "invalid_tool_calls": []}
    for kind, calls in fixed.items():
        for call in getattr(answer, kind):
            if not call.get("id") or call["id"] in taken:
                call = {**call, "id": f"call_{uuid.uuid4().hex[:24]}"}
            taken.add(call["id"])
            calls.append(call)
    if fixed == {"tool_calls": answer.tool_calls, "invalid_tool_calls": answer.invalid_tool_calls}:
        return answer
    return answer.model_copy(update=fixed)


def as_chunk(message: AIMessage) -> AIMessageChunk:
    """``message`` as a chunk whose ``tool_call_chunks`` carry its tool calls (one each, unindexed)."""
    if isinstance(message, AIMessageChunk) and (message.tool_call_chunks or not message.tool_calls):
        return message
    return AIMessageChunk(
        content=message.content,
        additional_kwargs=message.additional_kwargs,
        response_metadata=message.response_metadata,
        usage_metadata=message.usage_metadata,
        name=message.name,
        id=message.id,
        tool_calls=message.tool_calls,
        invalid_tool_calls=message.invalid_tool_calls,
        chunk_position=message.chunk_position if isinstance(message, AIMessageChunk) else None,
    )


def step_limit_answer(max_steps: int) -> AIMessage:
    """The plain answer that ends a turn at ``max_steps`` model calls."""
    return AIMessage(
        content=(
            f"I stopped here because this request reached the limit of {max_steps} model "
            "steps before it was finished. Ask me to continue, or narrow the request."
        ),
        response_metadata={"finish_reason": STEP_LIMIT_REASON},
    )


def invalid_call_errors(answer: AIMessage) -> list[ToolMessage]:
    """An error result for each call whose arguments did not parse, so the model can retry."""
    return [
        ToolMessage(
            content=(
                f"Error: the arguments of this {call['name']} call are not valid JSON "
                f"({call.get('error') or 'could not parse'}): {call.get('args')!r}. "
                "Call the tool again with a JSON object of arguments."
            ),
            tool_call_id=call["id"] or "",
            name=call["name"] or "unknown",
            status="error",
        )
        for call in answer.invalid_tool_calls
    ]
