"""Approval before a tool runs: tools configured with ``requires_approval=True`` wait for a person.

``require_approval`` is an ``awrap_tool_call`` wrapper (its place in the chain, before every
limit: ``agent_ng.engine.chain``). It stops the run with LangGraph's ``interrupt()``, whose
value shows the call; the tool calls of the same step that need no approval
run and are checkpointed meanwhile. The run continues with ``Command(resume=...)``, one answer per
interrupt id (``AgentEvent.interrupt_id``):

    configure(delete_file, requires_approval=True)
    ...
    Command(resume={interrupt_id: {"action": "approve"}})
    Command(resume={interrupt_id: {"action": "reject", "reason": "not that file"}})
    Command(resume={interrupt_id: {"action": "edit", "args": {"path": "/tmp/x"}}})

``"approve"`` and ``"reject"`` may be given as plain strings. A rejected call does not run: the
model reads an error result saying so. An answer that is not understood is asked again, with the
reason in the new interrupt's ``error``; nothing runs meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt

from agent_ng.engine.tool_calls import Execute, call_scope, keep_shown, noted, report_end
from agent_ng.tools.registry import spec_of

Action = Literal["approve", "reject", "edit"]


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's answer to one approval request."""

    action: Action
    args: dict[str, Any] | None = None
    reason: str = ""


def parse_decision(answer: Any) -> Decision:
    """``"approve"``, ``"reject"`` or ``{"action": ..., "args": {...}, "reason": "..."}``."""
    if isinstance(answer, str):
        answer = {"action": answer}
    if not isinstance(answer, dict) or answer.get("action") not in ("approve", "reject", "edit"):
        raise ValueError(
            f"an approval answer is 'approve', 'reject' or {{'action': 'edit', 'args': {{...}}}}, "
            f"got {answer!r}"
        )
    args = answer.get("args")
    if answer["action"] == "edit" and not isinstance(args, dict):
        raise ValueError(f"an 'edit' answer needs 'args', a JSON object of arguments; got {args!r}")
    return Decision(answer["action"], args if answer["action"] == "edit" else None, str(answer.get("reason") or ""))


def approval_request(request: ToolCallRequest) -> dict[str, Any]:
    """What the person is shown: the call as the model made it."""
    call = request.tool_call
    return {
        "type": "approval",
        "tool_call_id": call["id"],
        "name": call["name"],
        "args": call["args"],
        "description": request.tool.description if request.tool else None,
    }


def ask(question: dict[str, Any]) -> Decision:
    """Interrupt until the answer is understood; each misunderstood answer is asked again."""
    while True:
        try:
            return parse_decision(interrupt(question))
        except ValueError as e:
            question = {**question, "error": str(e)}


async def require_approval(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
    """Run the call only once a person approved it (as asked, or with edited arguments)."""
    if not spec_of(request.tool).requires_approval:
        return await execute(request)
    decision = ask(approval_request(request))
    call = request.tool_call
    if decision.action == "reject":
        return rejected(request, decision.reason)
    if decision.action == "approve":
        return await execute(request)
    result = await execute(request.override(tool_call={**call, "args": decision.args}))
    if isinstance(result, ToolMessage) and isinstance(result.content, str):
        result.content = f"(The user edited the arguments to {json.dumps(decision.args)}.) {result.content}"
    return result


def rejected(request: ToolCallRequest, reason: str) -> ToolMessage:
    """The result the model reads for a rejected call; the stream shows it as a tool error
    (``tool_result``, then ``tool_error``, as for any failed call: ``report_end``)."""
    call = request.tool_call
    text = f"Rejected: the user did not approve this {call['name']} call, so it did not run."
    if reason:
        text += f" Their reason: {reason}"
    message = noted(
        ToolMessage(text, tool_call_id=call["id"], name=call["name"], status="error"), rejected=True
    )
    keep_shown(request, message)
    with call_scope(request) as scope:
        report_end(scope, message, 0.0, cached=False)
    return message
