"""The one rule a history must keep to be sent to a model, and how to restore it.

Chat APIs reject a history in which a tool call has no result, or a result has no call
("tool_calls must be followed by tool messages"), and a result placed after the next user
message does not count. So the rule is positional: every AI message's tool calls (valid or
garbled, ``invalid_tool_calls``, which providers also send back) are answered by exactly one
``ToolMessage`` each, in the run of tool messages right after it, and every tool message
answers a call of the AI message it follows.

Whatever happened to a call (finished, failed, timed out, cancelled, rejected at approval,
lost in a crash, unknown tool, arguments that are not JSON), something in the agent writes its
result; ``repair`` is the last line for what nothing wrote (a thread from an older version, or
edited by hand): it inserts an explicit "was not completed" result where the result belongs
and drops results that answer nothing or answer a call a second time.

    violations(messages)   # [] when valid; else what is wrong, one line each
    repair(messages)       # the same history, valid (unchanged when it already was)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, ToolMessage

LOST = "Error: not completed: this call was interrupted and its result was lost."


def calls_of(message: BaseMessage) -> list[dict[str, Any]]:
    """The tool calls an AI message made, garbled ones included (each has ``id`` and ``name``)."""
    if not isinstance(message, AIMessage):
        return []
    return [*message.tool_calls, *message.invalid_tool_calls]


def not_completed(call: dict[str, Any], text: str = LOST) -> ToolMessage:
    """The error result that stands for a call that never produced one."""
    return ToolMessage(
        text, tool_call_id=call.get("id") or "", name=call.get("name") or "unknown", status="error"
    )


def violations(messages: Sequence[BaseMessage]) -> list[str]:
    """What breaks the rule, one line per problem; empty when the history is valid."""
    problems: list[str] = []
    open_calls: dict[str, str] = {}
    answered: set[str] = set()

    def close_step() -> None:
        problems.extend(f"tool call {i} ({n}) has no result" for i, n in open_calls.items() if i not in answered)

    for message in messages:
        if isinstance(message, ToolMessage):
            if message.tool_call_id not in open_calls:
                problems.append(f"tool result {message.tool_call_id} answers no call of the AI message before it")
            elif message.tool_call_id in answered:
                problems.append(f"tool call {message.tool_call_id} has more than one result")
            answered.add(message.tool_call_id)
            continue
        close_step()
        open_calls = {c.get("id") or "": c.get("name") or "unknown" for c in calls_of(message)}
        answered = set()
    close_step()
    return problems


def is_valid(messages: Sequence[BaseMessage]) -> bool:
    """Whether the history keeps the rule, so a model will take it as is."""
    return not violations(messages)


def repair(messages: Sequence[AnyMessage], text: str = LOST) -> list[AnyMessage]:
    """``messages`` made valid: missing results inserted as "not completed" right after their
    call's step, stray and repeated results dropped; everything else kept in order."""
    repaired: list[AnyMessage] = []
    calls: list[dict[str, Any]] = []
    answered: set[str] = set()

    def close_step() -> None:
        repaired.extend(not_completed(c, text) for c in calls if (c.get("id") or "") not in answered)

    for message in messages:
        if isinstance(message, ToolMessage):
            ids = {c.get("id") or "" for c in calls}
            if message.tool_call_id in ids and message.tool_call_id not in answered:
                repaired.append(message)
                answered.add(message.tool_call_id)
            continue
        close_step()
        repaired.append(message)
        calls, answered = calls_of(message), set()
    close_step()
    return repaired


def unanswered(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The calls of the open step (the last AI message, followed by tool results only) that no
    result answers yet; results added now land where they belong."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], AIMessage)), None)
    if last is None or not all(isinstance(m, ToolMessage) for m in messages[last + 1 :]):
        return []
    answered = {m.tool_call_id for m in messages[last + 1 :]}
    return [c for c in calls_of(messages[last]) if (c.get("id") or "") not in answered]
