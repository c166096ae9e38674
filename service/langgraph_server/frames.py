"""One run's stream as ``langgraph dev`` sends it: the log entries a run writes, and their SSE frames.

A LangGraph Server API run is a background run (``agent_ng.service.background``) whose items
(``AgentEvent``s and the ``Part``s of the LangGraph stream modes it asked for,
``agent_ng.graph.events.run_events``) become log entries here, frame by frame as
``langgraph_api.stream.astream_state`` makes them; a stream, a join and a reconnect read them
back from the log and send each as an SSE event::

    frames = Frames(["values", "messages-tuple", "custom"], subgraphs=False)
    run_id = await runs.start(thread_id, input, config, record=frames.record, parts=frames.parts)
    async for batch in runs.events.read_batches(run_id):
        for line in batch:                         # (cursor, type, JSON text)
            if (sse := Frames.sse(line, resumable)) is not None:
                yield sse                          # (event, data JSON text, id or None)

The frames: ``metadata`` first (``run_id``, ``attempt``); ``messages`` as ``[message,
metadata]`` for ``messages-tuple``, or ``messages/metadata``, ``messages/partial`` (the message
so far) and ``messages/complete`` for the older ``messages``; each other mode's chunk under its
name, ``<mode>|<namespace>`` for a subgraph's with ``stream_subgraphs``; ``error`` with the
exception's class and message when the run fails. The log's last entry is the run's
``run_end`` (``AgentEvent.to_dict``): it sends nothing, the stream ends there, and
``run_status`` reads the run's final status from it.

With langgraph >= 1.0.4 (this project needs 1.2) LangGraph puts a run's interrupts into its
``values`` chunks itself, so ``updates`` is not asked for to show them there, as
``langgraph_api`` does not ask for it either. ``langgraph_api`` always asks for ``debug`` to
track the run's checkpoints in its own run records; here the checkpointer is the record, so
``debug`` is asked for only when the client asks. The checkpoint configs in ``debug`` and
``checkpoints`` chunks leave out the results ``run_events`` keeps in the run's ``configurable``.
Messages are LangChain messages (a JS graph's dict messages, which ``langgraph_api`` also
accepts, never come from this service's graph).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message

from agent_ng.contract import AgentEvent, EventType
from agent_ng.engine.tool_calls import SHOWN_RESULTS
from agent_ng.graph.events import EVENTS, Part
from agent_ng.service.event_log import Line, event_json
from agent_ng.service.langgraph_server.schemas import checkpoint_json

FRAME = "frame"
"""The ``type`` of a log entry that is an SSE frame (``{"type", "event", "data"}``)."""
FRAME_HEAD = '{"type":"frame","event":'
DATA_KEY = ',"data":'

STREAM_MODES = (
    "values",
    "updates",
    "messages-tuple",
    "messages",
    "custom",
    "events",
    "debug",
    "tasks",
    "checkpoints",
)
"""The run body's ``stream_mode`` values served (``langgraph_api``'s, less the v2 protocol's
``tools`` and ``lifecycle``)."""

HIDDEN = "langsmith:hidden"

RunStatus = Literal["success", "error", "interrupted"]

_ERROR = re.compile(r"([A-Za-z_][\w.]*): (.*)", re.DOTALL)


class Frames:
    """One run's frames for the API modes ``stream_mode``; ``ValueError`` names a mode not served."""

    def __init__(self, stream_mode: Sequence[str], subgraphs: bool = False) -> None:
        if unknown := [m for m in stream_mode if m not in STREAM_MODES]:
            raise ValueError(
                f"stream_mode {unknown[0]!r} is not supported; the modes are {', '.join(STREAM_MODES)}"
            )
        self.stream_mode = frozenset(stream_mode)
        self.subgraphs = subgraphs
        self._tuples = "messages-tuple" in self.stream_mode
        self._messages: dict[str | None, BaseMessage] = {}
        """``messages`` (not tuples): each message so far, by id."""

    @property
    def parts(self) -> frozenset[str]:
        """The LangGraph stream modes the run asks for (``run_events(parts=...)``)."""
        return frozenset("messages" if m.startswith("messages") else m for m in self.stream_mode)

    def record(self, item: AgentEvent | Part) -> list[dict[str, Any]]:
        """The log entries of one item of the run (a ``background.Record``)."""
        if type(item) is Part:
            return self._part(item)
        if item.type == EventType.RUN_START:
            return [frame("metadata", {"run_id": item.run_id, "attempt": item.attempt})]
        if item.type == EventType.RUN_END:
            end = item.to_dict()
            if item.status == "error":
                return [frame("error", error_payload(item.error)), end]
            return [end]
        return []

    def _part(self, part: Part) -> list[dict[str, Any]]:
        mode, chunk = part.mode, part.chunk
        if mode == "messages":
            if self._tuples:
                return [frame(self._name(mode, part.namespace), chunk)]
            return self._legacy_message(*chunk)
        if mode == EVENTS:
            return [] if HIDDEN in (chunk.get("tags") or ()) else [frame(EVENTS, chunk)]
        if mode == "debug" and chunk.get("type") == "checkpoint":
            chunk = {**chunk, "payload": debug_checkpoint(chunk["payload"])}
        elif mode == "checkpoints":
            chunk = without_our_keys(chunk)
        return [frame(self._name(mode, part.namespace), chunk)]

    def _legacy_message(self, message: BaseMessage, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """``messages`` as ``langgraph_api`` sends it: the message so far (as a message, not a
        chunk), whatever its namespace; ``partial`` while chunks of it arrive."""
        entries = []
        if (so_far := self._messages.get(message.id)) is not None:
            self._messages[message.id] = so_far + message
        else:
            self._messages[message.id] = message
            entries.append(frame("messages/metadata", {message.id: {"metadata": metadata}}))
        name = "messages/partial" if isinstance(message, BaseMessageChunk) else "messages/complete"
        entries.append(frame(name, [message_chunk_to_message(self._messages[message.id])]))
        return entries

    def _name(self, mode: str, namespace: tuple[str, ...]) -> str:
        return f"{mode}|{'|'.join(namespace)}" if self.subgraphs and namespace else mode

    @staticmethod
    def sse(line: Line, resumable: bool) -> tuple[str, str, str | None] | None:
        """The SSE event of a log entry as the log keeps it (``read_batches``): ``(event, data
        JSON text, id)``; ``None`` for the ``run_end`` (the stream ends there). The id, the
        entry's cursor in the run's log, is sent only for a resumable run, as ``langgraph dev``
        does. The data's text is cut from the entry's, as ``frame`` made it (the frames of a
        streamed answer are decoded by no one); any other shape is decoded and its data encoded."""
        cursor, kind, text = line
        if kind != FRAME:
            return None
        head, found, rest = text.partition(DATA_KEY)
        if found and head.startswith(FRAME_HEAD) and rest.endswith("}"):
            event, data = json.loads(head[len(FRAME_HEAD):]), rest[:-1]
        else:
            entry = json.loads(text)
            event, data = entry["event"], event_json(entry["data"])
        return event, data, cursor if resumable else None


def frame(event: str, data: Any) -> dict[str, Any]:
    """A log entry that is the SSE event ``event`` with ``data``; its keys in this order, which
    its JSON text keeps (``Frames.sse`` reads it so)."""
    return {"type": FRAME, "event": event, "data": data}


def error_payload(error: str | None) -> dict[str, str]:
    """``run_end``'s ``error`` (``"<class>: <message>"``) as the ``error`` frame's data."""
    if error and (match := _ERROR.fullmatch(error)):
        return {"error": match[1], "message": match[2]}
    return {"error": "Error", "message": error or ""}


def run_status(end: dict[str, Any]) -> RunStatus:
    """The LangGraph run status a run's ``run_end`` entry stands for, as ``langgraph dev``
    records it: a run that ends waiting for approval has succeeded (its thread is the one
    ``interrupted``), a cancelled one is ``interrupted``, a model timeout is an ``error``."""
    status = end["status"]
    if status == "error":
        return "error"
    if status == "cancelled":
        return "interrupted"
    return "success"


def debug_checkpoint(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``debug`` checkpoint's payload with the ``checkpoint`` and ``parent_checkpoint`` ids
    ``langgraph_api`` adds (``stream._preprocess_debug_checkpoint``)."""
    if not payload:
        return None
    payload = without_our_keys(payload)
    return {
        **payload,
        "checkpoint": checkpoint_json(payload["config"]),
        "parent_checkpoint": checkpoint_json(payload.get("parent_config")),
        "tasks": [_debug_task(t) for t in payload["tasks"]],
    }


def without_our_keys(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint payload without what ``run_events`` adds to the run's ``configurable``
    (the results shown so far, ``agent_ng.engine.tool_calls.SHOWN_RESULTS``), which LangGraph
    copies into the payload's configs."""
    cleaned = {**payload}
    for key in ("config", "parent_config"):
        if (config := payload.get(key)) and SHOWN_RESULTS in config.get("configurable", ()):
            configurable = {k: v for k, v in config["configurable"].items() if k != SHOWN_RESULTS}
            cleaned[key] = {**config, "configurable": configurable}
    return cleaned


def _debug_task(task: dict[str, Any]) -> dict[str, Any]:
    state = task.get("state")
    if not state or not state.get("configurable"):
        return task
    task = {**task, "checkpoint": state["configurable"]}
    del task["state"]
    return task

