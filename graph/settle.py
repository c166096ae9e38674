"""Leave a thread valid after its run was cancelled mid-step.

A run stopped while tools run (a client went away, Ctrl-C) leaves the thread's last model turn
with tool calls that have no result. Chat APIs reject such a history ("tool_calls must be
followed by tool messages"), and a new question on that thread would also drop the results of
the tools that did finish, because they are only pending writes of the unfinished step.

``settle`` closes that turn the way the tools node would have: each finished call keeps its
result, each unfinished one gets an error ``ToolMessage`` saying it was cancelled, written as
the tools node's update. The thread then reads as an ordinary, complete history.

    try:
        async for event in stream(graph, input, config): ...
    except asyncio.CancelledError:
        await settle(graph, config)   # shielded from the cancellation
        raise
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel

CANCELLED = "Error: cancelled: the run was stopped before this tool finished."


async def settle(
    graph: Pregel, config: RunnableConfig, *, as_node: str = "tools"
) -> list[ToolMessage]:
    """Close the thread's last turn: keep finished results, mark the rest cancelled.

    Returns the messages written (none when the turn was already complete). The results of
    tools that finished inside the unfinished step are written again, with their own ids, so
    they are kept rather than lost with the step.
    """
    state = await graph.aget_state(config)
    messages = state.values.get("messages", []) if state.values else []
    finished = {
        message.tool_call_id: message
        for task in state.tasks
        if isinstance(task.result, dict)
        for message in task.result.get("messages", [])
        if isinstance(message, ToolMessage)
    }
    answered = {m.tool_call_id for m in current_turn(messages) if isinstance(m, ToolMessage)}
    closing = [
        finished.get(call["id"])
        or ToolMessage(CANCELLED, tool_call_id=call["id"], name=call["name"], status="error")
        for call in turn_calls(messages)
        if call["id"] in finished or call["id"] not in answered
    ]
    if closing:
        await graph.aupdate_state(config, {"messages": closing}, as_node=as_node)
    return closing


def current_turn(messages: list[AnyMessage]) -> list[AnyMessage]:
    """The messages after the last human message."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage):
            return messages[index + 1 :]
    return messages


def turn_calls(messages: list[AnyMessage]) -> list[ToolCall]:
    """Every tool call the model made in the current turn, in order."""
    return [
        call
        for message in current_turn(messages)
        if isinstance(message, AIMessage)
        for call in message.tool_calls
    ]
