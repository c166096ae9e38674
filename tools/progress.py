"""Progress reporting for tool authors.

A tool calls ``progress.report(fraction, message)`` while it works. The report goes to
LangGraph's custom stream (the same writer ``get_stream_writer`` returns), or straight to the
reader when the run is read as our event stream alone (``agent_ng.nodes.tokens``), tagged with
the id of the tool call that is running, so parallel calls of the same tool stay apart and the
reports also show in ``langgraph dev``. What a record holds is ``agent_ng.contract``'s to say.

    from agent_ng.tools import progress

    @tool
    def crunch(n: int) -> int:
        for i in range(n):
            ...
            progress.report((i + 1) / n, f"chunk {i + 1} of {n}")

Outside a graph run (a plain ``tool.invoke``) ``report`` does nothing, so tools stay
testable on their own. Once the engine has given up on a call (it timed out), ``report``
raises ``ToolCallAbandoned``: a sync tool, which a thread cannot cancel, stops at its next
report instead of working on for nobody, and nothing it reports late reaches the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from threading import Event, Lock
from time import perf_counter
from typing import Concatenate, ParamSpec

from agent_ng.contract import Record, tool_progress

Fields = ParamSpec("Fields")


@dataclass(frozen=True, slots=True)
class Progress:
    """What an async-generator tool yields to report progress (see ``agent_ng.tools.registry``)."""

    fraction: float | None = None
    message: str = ""


class ToolCallAbandoned(Exception):
    """Raised by ``report`` in a tool call the engine no longer waits for (it timed out)."""


@dataclass(frozen=True, slots=True)
class ToolCallScope:
    """The tool call that is running in this context, and where its reports go."""

    tool_call_id: str
    name: str
    started: float
    write: Callable[[Record], None]
    expected_s: float | None = None
    """How long this tool usually takes (from its history), if known."""
    finished: Event = field(default_factory=Event)
    """Set when the call is over for the graph; a worker thread can read it safely."""
    _writing: Lock = field(default_factory=Lock)

    def elapsed(self) -> float:
        return perf_counter() - self.started

    def emit(
        self, record: Callable[Concatenate[str, str, Fields], Record], /, *args: Fields.args, **fields: Fields.kwargs
    ) -> None:
        """Write a record of this call, made by one of ``agent_ng.contract``'s constructors
        (``scope.emit(tool_complete, elapsed_s=1.5, cached=False)``); dropped once the call is over."""
        with self._writing:
            if self.finished.is_set():
                return
            self.write(record(self.tool_call_id, self.name, *args, **fields))

    def finish(self) -> None:
        """End the call for the graph: no write from any thread gets through after this."""
        with self._writing:
            self.finished.set()


_current: ContextVar[ToolCallScope | None] = ContextVar("agent_ng_tool_call", default=None)


@contextmanager
def tool_call_scope(
    tool_call_id: str,
    name: str,
    write: Callable[[Record], None],
    expected_s: float | None = None,
) -> Iterator[ToolCallScope]:
    """Mark the code inside as running tool call ``tool_call_id``.

    Set by the tool-call wrapper around each execution; context variables follow the call
    into async tools and into the worker thread of sync tools. On exit the scope is marked
    finished, so a worker thread still running the call can no longer write.
    """
    scope = ToolCallScope(tool_call_id, name, perf_counter(), write, expected_s)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        scope.finish()
        _current.reset(token)


def current() -> ToolCallScope | None:
    """The running tool call, or None outside one."""
    return _current.get()


def remaining_s(
    fraction: float | None, elapsed_s: float, expected_s: float | None = None
) -> float | None:
    """Time left, from the call's own pace and the tool's usual duration.

    The pace (elapsed * (1 - f) / f: the rest goes as fast as what is done) is noisy early
    and exact at the end; the history (expected - elapsed) is the better guess early on. So
    the two are weighted by the fraction done, f * pace + (1 - f) * history; either alone
    when the other is unknown (no fraction, no history, or the call is past its usual time).
    """
    pace = None if fraction is None or fraction <= 0 else elapsed_s * (1 - fraction) / fraction
    history = None if expected_s is None or expected_s <= elapsed_s else expected_s - elapsed_s
    if pace is None or history is None:
        return pace if history is None else history
    return fraction * pace + (1 - fraction) * history


def report(fraction: float | None = None, message: str = "") -> None:
    """Report how far the running tool is: ``fraction`` in [0, 1] (None if unknown)."""
    if fraction is not None and not 0 <= fraction <= 1:
        raise ValueError(f"progress fraction must be between 0 and 1, got {fraction!r}")
    scope = _current.get()
    if scope is None:
        return
    if scope.finished.is_set():
        raise ToolCallAbandoned(f"tool call {scope.tool_call_id} is over; stop working on it")
    elapsed = scope.elapsed()
    scope.emit(
        tool_progress,
        progress=fraction,
        message=message,
        elapsed_s=elapsed,
        eta_s=remaining_s(fraction, elapsed, scope.expected_s),
    )
