"""What the model is sent: the newest history within a token budget, tool calls kept whole.

The thread in the checkpoint keeps every message; only the request to the model is trimmed,
before each call, with ``trim_messages`` (``strategy="last"``), counting tokens with the model's
own tokenizer when it has one that works here and ``count_tokens_approximately`` otherwise.

The window is valid for any provider: the system prompt always stays, and the window starts at
a user message, so an AI message with tool calls is never sent without all its ``ToolMessage``s
nor a ``ToolMessage`` without its AI message. When the current turn alone is over budget, its
question stays, followed by the newest whole steps that fit (each starting at an AI message),
and at least the newest step whatever its size: the model must see its latest results.

With ``summarize=True``, what the window drops is summarised by the model (one call without
streaming, only when more was dropped since the last summary); the summary is stored in the
state (``summary``, ``summary_through``) and sent inside the system message.

    memory = make_memory(model, max_tokens=32_000)
    recall = await memory([SystemMessage(prompt)], state)   # recall.messages -> the model
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)
from langchain_core.messages.utils import count_tokens_approximately
from langgraph.constants import TAG_NOSTREAM

from agent_ng.models.chat import ModelTimeoutError, model_name
from agent_ng.nodes.state import AgentState

log = logging.getLogger("agent_ng")

TokenCounter = Callable[[Sequence[BaseMessage]], int]

SUMMARY_PROMPT = (
    "Summarise the conversation below for an assistant that continues it without seeing these "
    "messages. Keep facts, numbers, tool results, decisions and open questions. At most 200 words."
)
SUMMARY_HEADING = "Summary of the earlier conversation (those messages are not shown):"


@dataclass(frozen=True, slots=True)
class Recall:
    """The messages sent to the model this call, and what to store in the state (a new summary)."""

    messages: list[BaseMessage]
    update: dict[str, Any] = field(default_factory=dict)


Memory = Callable[[list[SystemMessage], AgentState], Awaitable[Recall]]


def make_memory(
    model: BaseChatModel,
    *,
    max_tokens: int,
    summarize: bool = False,
    timeout_s: float | None = None,
    token_counter: TokenCounter | None = None,
) -> Memory:
    """Trim to ``max_tokens`` (0: send everything) and optionally summarise what is dropped,
    the summary call bounded by ``timeout_s`` (``ModelTimeoutError``), as the answer's is."""
    counters = [token_counter] if token_counter else []

    async def recall(system: list[SystemMessage], state: AgentState) -> Recall:
        history = state["messages"]
        if not max_tokens:
            return Recall([*system, *history])
        if not counters:  # chosen on first use; a model's own tokenizer may load or fetch its files
            own = has_own_counter(model)
            counters.append(await asyncio.to_thread(token_counter_for, model) if own else count_tokens_approximately)
        count = counters[0]
        summary = state.get("summary", "") if summarize else ""
        budget = max_tokens - count(with_summary(system, summary))
        kept = window(history, budget, count)
        if len(kept) == len(history):
            return Recall([*system, *history])
        update: dict[str, Any] = {}
        if summarize:
            fresh = newly_dropped(history, kept, state.get("summary_through"))
            if fresh:
                try:
                    async with asyncio.timeout(timeout_s):
                        summary = await summarize_messages(model, summary, fresh)
                except TimeoutError as e:
                    raise ModelTimeoutError(model_name(model), timeout_s or 0, 0) from e
                update = {"summary": summary, "summary_through": fresh[-1].id}
        return Recall([*with_summary(system, summary), *kept], update)

    return recall


def window(history: Sequence[AnyMessage], budget: int, count: TokenCounter) -> list[AnyMessage]:
    """The newest messages that fit ``budget``, never splitting a tool call from its results."""
    if count(history) <= budget:
        return list(history)
    if budget > 0:
        turns = trim_messages(
            history, max_tokens=budget, token_counter=count, strategy="last", start_on="human"
        )
        if turns:
            return turns
    asked = last_index(history, HumanMessage)
    question = [history[asked]] if asked is not None else []
    steps = list(history[(asked if asked is not None else -1) + 1 :])
    left = budget - count(question)
    tail = (
        trim_messages(steps, max_tokens=left, token_counter=count, strategy="last", start_on="ai")
        if left > 0 and steps
        else []
    )
    if not tail and steps:
        newest = last_index(steps, AIMessage)
        tail = steps[newest:] if newest is not None else []
    return [*question, *tail]


def last_index(messages: Sequence[BaseMessage], kind: type[BaseMessage]) -> int | None:
    """Index of the last message of type ``kind``, or None."""
    return next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], kind)), None)


def newly_dropped(
    history: Sequence[AnyMessage], kept: Sequence[AnyMessage], summary_through: str | None
) -> list[AnyMessage]:
    """Dropped messages that come after the last one the summary covers."""
    kept_ids = {id(m) for m in kept}
    start = next((i + 1 for i, m in enumerate(history) if summary_through and m.id == summary_through), 0)
    return [m for m in history[start:] if id(m) not in kept_ids]


def with_summary(system: list[SystemMessage], summary: str) -> list[SystemMessage]:
    """The system message, with the summary appended when there is one."""
    if not summary:
        return system
    note = f"{SUMMARY_HEADING}\n{summary}"
    if not system:
        return [SystemMessage(note)]
    return [SystemMessage(f"{system[0].text}\n\n{note}"), *system[1:]]


async def summarize_messages(
    model: BaseChatModel, summary: str, messages: Sequence[BaseMessage]
) -> str:
    """Fold ``messages`` into ``summary``; tagged ``nostream`` so no token reaches the stream."""
    text = "\n".join(transcript_line(m) for m in messages)
    if summary:
        text = f"Summary so far:\n{summary}\n\nNew messages:\n{text}"
    answer = await model.ainvoke(
        [SystemMessage(SUMMARY_PROMPT), HumanMessage(text)], config={"tags": [TAG_NOSTREAM]}
    )
    return answer.text.strip()


def transcript_line(message: BaseMessage) -> str:
    """One message as a line of the transcript the summariser reads."""
    if isinstance(message, HumanMessage):
        return f"user: {message.text}"
    if isinstance(message, ToolMessage):
        return f"tool {message.name} ({message.status}): {message.text}"
    if isinstance(message, AIMessage):
        calls = "".join(f" [calls {c['name']}({c['args']})]" for c in message.tool_calls)
        return f"assistant: {message.text}{calls}"
    return f"{message.type}: {message.text}"


def has_own_counter(model: BaseChatModel) -> bool:
    """Whether the model counts tokens its own way (a tokenizer, probed off the event loop)."""
    return type(model).get_num_tokens_from_messages is not BaseChatModel.get_num_tokens_from_messages


def token_counter_for(model: BaseChatModel) -> TokenCounter:
    """The model's own counter if it overrides LangChain's default and works here (tiktoken
    needs its encodings, which an offline machine may lack); else the approximate one."""
    if not has_own_counter(model):
        return count_tokens_approximately
    try:
        model.get_num_tokens_from_messages([HumanMessage("probe")])
    except Exception as e:
        log.info("counting tokens approximately: %s's counter failed (%s)", type(model).__name__, e)
        return count_tokens_approximately
    return model.get_num_tokens_from_messages
