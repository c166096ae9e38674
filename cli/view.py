"""What a person sees while a run streams: the answer as it is written, and each tool live.

``TurnView`` folds ``AgentEvent``s into a rich renderable (a row per tool call with its
arguments, a progress bar, elapsed time and ETA; the answer text below). ``PlainView`` prints
the same events as lines, for pipes and logs where a live screen would be noise. Each handles
every event type of ``agent_ng.contract`` or names it among its skips
(``tests/unit/test_event_contract.py`` checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import TextIO

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agent_ng.contract import AgentEvent, EventType

TURN_VIEW_SKIPS = frozenset({EventType.RUN_START, EventType.TOOL_RESULT})
"""What ``TurnView`` shows nothing for: the question is already on screen, and a result is the
model's to present (the row shows that the call is done, or its error)."""

PLAIN_VIEW_SKIPS = frozenset({EventType.RUN_START, EventType.TOOL_CALL, EventType.TOOL_RESULT})
"""What ``PlainView`` prints no line for: as ``TURN_VIEW_SKIPS``, and a call's line waits for its
``tool_start``, which carries the same arguments."""


@dataclass
class ToolRow:
    """One tool call as the live view draws it."""

    name: str
    args: object
    state: str = "queued"
    fraction: float | None = None
    message: str = ""
    started: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    error: str | None = None

    def elapsed(self) -> float | None:
        """The final time once known, else the time since it started running."""
        if self.elapsed_s is not None:
            return self.elapsed_s
        return None if self.started is None else perf_counter() - self.started


@dataclass
class TurnView:
    """The run so far, in the order things happened: text blocks and tool tables."""

    blocks: list[Text | dict[str, ToolRow]] = field(default_factory=list)
    rows: dict[str, ToolRow] = field(default_factory=dict)
    status: str | None = None

    def handle(self, event: AgentEvent) -> None:
        """Fold one event into the view (``TURN_VIEW_SKIPS`` change nothing)."""
        if event.type == EventType.CONTENT:
            self._text().append(event.text or "")
        elif event.type == EventType.TOOL_CALL:
            row = ToolRow(event.name or "?", event.args)
            self.rows[event.tool_call_id or ""] = row
            self._tools()[event.tool_call_id or ""] = row
        elif event.type == EventType.INTERRUPT:
            if isinstance(event.value, dict) and event.value.get("tool_call_id") in self.rows:
                self.rows[event.value["tool_call_id"]].state = "waiting"
        elif event.type == EventType.RUN_END:
            self.status = event.status
        elif event.tool_call_id:
            if event.tool_call_id not in self.rows:  # a resumed run: its calls were made before
                row = ToolRow(event.name or "?", event.args if event.args is not None else {})
                self.rows[event.tool_call_id] = self._tools()[event.tool_call_id] = row
            self._update(self.rows[event.tool_call_id], event)

    def _update(self, row: ToolRow, event: AgentEvent) -> None:
        if event.type == EventType.TOOL_START:
            row.state, row.started, row.eta_s = "running", perf_counter(), event.eta_s
        elif event.type == EventType.TOOL_PROGRESS:
            row.fraction, row.message, row.eta_s = event.progress, event.message or "", event.eta_s
        elif event.type == EventType.TOOL_COMPLETE:
            row.state, row.elapsed_s, row.fraction, row.eta_s = "done", event.elapsed_s, 1.0, None
        elif event.type == EventType.TOOL_ERROR:
            row.state, row.elapsed_s, row.error, row.eta_s = "error", event.elapsed_s, event.error, None

    def _text(self) -> Text:
        if not self.blocks or not isinstance(self.blocks[-1], Text):
            self.blocks.append(Text())
        return self.blocks[-1]

    def _tools(self) -> dict[str, ToolRow]:
        if not self.blocks or not isinstance(self.blocks[-1], dict):
            self.blocks.append({})
        return self.blocks[-1]

    def __rich__(self) -> RenderableType:
        return Group(*(b if isinstance(b, Text) else tool_table(b) for b in self.blocks))


def tool_table(rows: dict[str, ToolRow]) -> Table:
    """One line per call: mark, call, bar, percent, elapsed, ETA, then its message or error."""
    table = Table.grid(padding=(0, 1))
    for row in rows.values():
        table.add_row(
            status_mark(row),
            Text(call_label(row), style="bold"),
            ProgressBar(total=1.0, completed=row.fraction or 0.0, width=24, pulse=row.fraction is None and row.state == "running"),
            Text(percent(row.fraction)),
            Text(seconds(row.elapsed()), style="cyan"),
            Text(f"eta {seconds(row.eta_s)}" if row.eta_s is not None else "", style="dim"),
            Text(row.error or row.message, style="red" if row.error else "dim", overflow="ellipsis", no_wrap=True),
        )
    return table


def status_mark(row: ToolRow) -> RenderableType:
    """A spinner while running, else a mark for queued, waiting, done or failed."""
    if row.state == "running":
        return Spinner("dots", style="yellow")
    marks = {"done": Text("✓", style="green"), "error": Text("✗", style="red"), "waiting": Text("?", style="bold yellow")}
    return marks.get(row.state, Text("·", style="dim"))


def call_label(row: ToolRow, limit: int = 48) -> str:
    """``name(arg=value, ...)``, cut to ``limit`` characters so the table keeps one line per call."""
    args = ", ".join(f"{k}={v!r}" for k, v in row.args.items()) if isinstance(row.args, dict) else str(row.args)
    label = f"{row.name}({args})"
    return label if len(label) <= limit else label[: limit - 1] + "…"


def percent(fraction: float | None) -> str:
    """The fraction as a percentage; empty when unknown."""
    return "" if fraction is None else f"{fraction:4.0%}"


def seconds(value: float | None) -> str:
    """Seconds with two decimals; empty when unknown."""
    return "" if value is None else f"{value:.2f}s"


@dataclass
class PlainView:
    """The events as plain lines: text as it streams, one line per tool event."""

    out: TextIO
    status: str | None = None
    _mid_line: bool = False

    def handle(self, event: AgentEvent) -> None:
        """Print one event (``PLAIN_VIEW_SKIPS`` print nothing)."""
        if event.type == EventType.CONTENT:
            self.out.write(event.text or "")
            self._mid_line = not (event.text or "").endswith("\n")
        elif line := self._line(event):
            if self._mid_line:
                self.out.write("\n")
                self._mid_line = False
            self.out.write(line + "\n")
        if event.type == EventType.RUN_END:
            self.status = event.status
        self.out.flush()

    def _line(self, event: AgentEvent) -> str | None:
        name = event.name
        if event.type == EventType.TOOL_START:
            return f"[{name}] started {event.args}"
        if event.type == EventType.TOOL_PROGRESS:
            return f"[{name}] {percent(event.progress).strip()} {event.message}".rstrip()
        if event.type == EventType.TOOL_COMPLETE:
            return f"[{name}] done in {seconds(event.elapsed_s)}{' (cached)' if event.cached else ''}"
        if event.type == EventType.TOOL_ERROR:
            return f"[{name}] failed after {seconds(event.elapsed_s)}: {event.error}"
        if event.type == EventType.INTERRUPT:
            return f"(waiting for an answer: {event.value})"
        if event.type == EventType.RUN_END:
            return "" if event.status == "done" else f"(run ended: {event.status})"
        return None
