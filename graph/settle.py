"""End a thread's unfinished run where it stands, keeping everything it produced.

A run stopped mid-step (Ctrl-C, a cancelled ``stream()`` consumer, a client that went away)
leaves the thread with a pending step: the model's answer cut off mid-stream, or tool calls
without results while the results of the tools that did finish are only pending writes, which
LangGraph drops when new input arrives. A thread waiting for approval, or killed mid-step, is
in the same place when a new user message comes instead of the answer.

``settle`` ends it as a normal end would have, in one consistent set of checkpoints:

- the model text already streamed (``partial``) is stored as the model's answer;
- each finished tool call keeps its result, also one shown to the consumer whose task the stop
  cancelled while the wrappers outside ``Lifecycle`` were still busy with it; each unfinished one gets an explicit error result
  (``text``: cancelled, or not completed), so the history keeps its rule (``agent_ng.nodes.history``);
- the pending step is cleared, so the thread is idle and the next turn starts from it.

``agent_ng.graph.events.stream`` calls it itself, shielded, when its consumer stops (cancelled or
closed) and before new input on a thread with a pending step; it writes nothing when the
thread has no pending step.

A step is pending while the state has ``tasks``, not only while it has ``next``: once every
task of a step has written (the model's whole answer, say) ``next`` is empty, but the writes
are still pending until the step closes, and new input would drop them.
"""

from __future__ import annotations

from collections.abc import Mapping

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.constants import END
from langgraph.pregel import Pregel

from agent_ng.nodes import LLM, TOOLS
from agent_ng.nodes.history import not_completed, unanswered
from agent_ng.persistence.threads import refuse_if_waiting

CANCELLED = "Error: cancelled: the run was stopped before this tool finished."
SUPERSEDED = (
    "Error: not completed: the user sent a new message before this call finished "
    "(it was waiting for approval, or its run was stopped)."
)


async def settle(
    graph: Pregel,
    config: RunnableConfig,
    *,
    partial: AIMessage | None = None,
    shown: Mapping[str, ToolMessage] | None = None,
    text: str = CANCELLED,
    refuse_waiting: bool = False,
) -> list[AnyMessage]:
    """Store what the unfinished step produced, close its tool calls, and clear it.

    ``shown``: results the consumer saw by tool call id (``agent_ng.engine.tool_calls.SHOWN_RESULTS``);
    they count as finished even when the stop cancelled their task before LangGraph stored them.
    ``refuse_waiting``: a step whose calls wait for approval is left as it is and refused
    (``UnfinishedRunError``), as the service refuses a new question there.

    Returns the messages written (none when the thread had no pending step).
    """
    shown = shown or {}
    state = await graph.aget_state(config)
    if refuse_waiting:
        refuse_if_waiting(config["configurable"]["thread_id"], state)
    if not state.tasks:
        return []
    messages = state.values.get("messages", []) if state.values else []
    written: list[AnyMessage] = []
    if partial is not None and LLM in state.next and partial.id not in {m.id for m in messages}:
        written.append(partial)
        await graph.aupdate_state(config, {"messages": [partial]}, as_node=LLM)
    finished = {
        message.tool_call_id: message
        for task in state.tasks
        if isinstance(task.result, dict)
        for message in task.result.get("messages", [])
        if isinstance(message, ToolMessage)
    }
    # the state shows finished results of the pending step, but they are only its pending
    # writes: the update that closes the step writes them again, with the missing ones
    missing = [call for call in unanswered(messages) if call["id"] not in finished]
    closing = [*finished.values(), *(shown.get(call["id"]) or not_completed(call, text) for call in missing)]
    if closing:
        written += closing
        await graph.aupdate_state(config, {"messages": closing}, as_node=TOOLS)
    if (await graph.aget_state(config)).tasks:
        await graph.aupdate_state(config, None, as_node=END)
    return written
