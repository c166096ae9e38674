"""The event contract, stated once: which events a run yields, what each carries, and the records
the tool engine writes for the adapter to turn into events.

The names and fields are the public wire format (``AgentEvent.to_dict``, the SSE stream, the
``custom`` records seen in ``langgraph dev``, the ``on_custom_event`` events of ``astream_events``),
so they change only here, deliberately. The adapter (``agent_ng.graph.events``) builds the events;
the tool engine and ``progress.report`` build their records with the constructors below and write
them through ``ToolCallScope.emit`` (``agent_ng.tools.progress``):

    scope.emit(tool_progress, progress=0.5, message="half", elapsed_s=1.2, eta_s=1.2)

A misspelt type or field then fails where it is written, not downstream. A new type needs its
fields here and a case in every consumer (the CLI views, the AG-UI translation, the web page):
``tests/unit/test_event_contract.py`` fails until each has one. The module sits at the package
root, below ``agent_ng.tools`` and ``agent_ng.engine``, so both import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal


class EventType(StrEnum):
    """Every event type; a member equals its name as a string, so ``event.type == "content"`` holds."""

    RUN_START = "run_start"
    CONTENT = "content"
    TOOL_CALL = "tool_call"
    TOOL_START = "tool_start"
    TOOL_PROGRESS = "tool_progress"
    TOOL_RESULT = "tool_result"
    TOOL_COMPLETE = "tool_complete"
    TOOL_ERROR = "tool_error"
    INTERRUPT = "interrupt"
    RUN_END = "run_end"


RunStatus = Literal["done", "max_steps", "interrupted", "cancelled", "error"]

FIELDS: dict[EventType, tuple[str, ...]] = {
    EventType.RUN_START: ("input", "attempt"),
    EventType.CONTENT: ("text", "node"),
    EventType.TOOL_CALL: ("tool_call_id", "name", "args"),
    EventType.TOOL_START: ("tool_call_id", "name", "args", "eta_s", "cached"),
    EventType.TOOL_PROGRESS: ("tool_call_id", "name", "progress", "message", "elapsed_s", "eta_s"),
    EventType.TOOL_RESULT: ("tool_call_id", "name", "content", "status"),
    EventType.TOOL_COMPLETE: ("tool_call_id", "name", "elapsed_s", "cached"),
    EventType.TOOL_ERROR: ("tool_call_id", "name", "error", "elapsed_s"),
    EventType.INTERRUPT: ("value", "interrupt_id"),
    EventType.RUN_END: ("status", "usage", "error"),
}
"""What each event type carries besides ``type``, ``run_id``, ``thread_id`` and ``t``."""


@dataclass(slots=True)
class AgentEvent:
    """One thing that happened in a run; ``to_dict`` is its wire form."""

    type: EventType
    run_id: str
    thread_id: str | None
    t: float
    """Seconds since the run started."""
    input: str | None = None
    attempt: int | None = None
    """Which attempt of the run this is: 1, or more once another replica took the run over."""
    text: str | None = None
    node: str | None = None
    tool_call_id: str | None = None
    name: str | None = None
    args: Any = None
    eta_s: float | None = None
    cached: bool | None = None
    progress: float | None = None
    message: str | None = None
    elapsed_s: float | None = None
    content: str | None = None
    status: str | None = None
    error: str | None = None
    value: Any = None
    interrupt_id: str | None = None
    usage: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.type not in FIELDS:  # a plain string is accepted if it names a type
            raise ValueError(f"unknown event type {self.type!r}; the types are {[t.value for t in EventType]}")

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data: the common fields and those of its type (``type`` as a plain
        string, as on the wire)."""
        data = {"type": str(self.type), "run_id": self.run_id, "thread_id": self.thread_id, "t": self.t}
        for name in FIELDS[self.type]:
            data[name] = getattr(self, name)
        return data


EVENT_KEY = "agent_ng"
"""Key that marks our own records in LangGraph's custom stream; its value is the event type."""

CUSTOM_EVENT = "agent_ng"
"""Name of the ``on_custom_event`` that also carries each record to callback handlers
(``astream_events``, tracers); docs/embedding.md names it to handlers, so it keeps its value."""

Record = dict[str, Any]
"""A custom-stream record: ``{EVENT_KEY: type, "tool_call_id": ..., "name": ..., **fields}``."""


def tool_start(tool_call_id: str, name: str, *, args: Any, eta_s: float | None, cached: bool) -> Record:
    """The tool begins running; ``cached`` when it is answered without running."""
    return _record(EventType.TOOL_START, tool_call_id, name, args=args, eta_s=eta_s, cached=cached)


def tool_progress(
    tool_call_id: str,
    name: str,
    *,
    progress: float | None,
    message: str,
    elapsed_s: float,
    eta_s: float | None,
) -> Record:
    """The tool reports how far it is (``progress`` in [0, 1], None when unknown)."""
    return _record(
        EventType.TOOL_PROGRESS,
        tool_call_id,
        name,
        progress=progress,
        message=message,
        elapsed_s=elapsed_s,
        eta_s=eta_s,
    )


def tool_result(tool_call_id: str, name: str, *, content: str, status: str) -> Record:
    """The tool's output, as a bounded preview (``agent_ng.engine.tool_calls.preview``)."""
    return _record(EventType.TOOL_RESULT, tool_call_id, name, content=content, status=status)


def tool_complete(tool_call_id: str, name: str, *, elapsed_s: float, cached: bool) -> Record:
    """The tool finished."""
    return _record(EventType.TOOL_COMPLETE, tool_call_id, name, elapsed_s=elapsed_s, cached=cached)


def tool_error(tool_call_id: str, name: str, *, error: str, elapsed_s: float) -> Record:
    """The tool failed, timed out, was cancelled or was rejected."""
    return _record(EventType.TOOL_ERROR, tool_call_id, name, error=error, elapsed_s=elapsed_s)


RECORDS = (tool_start, tool_progress, tool_result, tool_complete, tool_error)
"""Every record constructor: the events the tool engine reports, the others are the adapter's."""


def _record(type: EventType, tool_call_id: str, name: str, **fields: Any) -> Record:
    return {EVENT_KEY: type.value, "tool_call_id": tool_call_id, "name": name, **fields}


_TYPES = {t.value: t for t in EventType}


def read_record(chunk: Any) -> tuple[EventType, dict[str, Any]] | None:
    """The type and fields of one of our custom-stream records; None for anything else (a tool
    may write its own records to the same stream)."""
    if not isinstance(chunk, dict):
        return None
    type_ = chunk.get(EVENT_KEY)
    if not isinstance(type_, str) or type_ not in _TYPES:
        return None
    return _TYPES[type_], {k: v for k, v in chunk.items() if k != EVENT_KEY}


def run_own(configurable: dict[str, Any], key: str) -> Any:
    """``configurable[key]`` for a call of the run's own graph; None for one of a graph run
    inside it (say from a tool), which inherits the config and nests its namespace under the
    tool's task (``|`` in ``checkpoint_ns``): what it streams is not the run's."""
    if "|" in configurable.get("checkpoint_ns", ""):
        return None
    return configurable.get(key)
