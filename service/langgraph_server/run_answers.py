"""How a LangGraph Server API run is answered: its SSE stream, or its final values once it ended.

Every answer reads the run's log (``frames.Frames``), so a stream, a join and a reconnect send
the same frames; what the client leaving does (``on_lost``: cancel the run, or nothing) is the
caller's to say::

    events = sse_frames(runs, run_id, cursor_of(last_event_id), resumable, on_lost=lost)
    return sse_response(request, events, stream_headers(thread_id, run_id))

Answers are ``langgraph dev``'s (``langgraph_api`` 0.16.7): its status codes, bodies and
headers, ``on_disconnect`` ``"continue"`` by default, ``: heartbeat`` comments every 5 seconds
(sooner if ``AGENT_SSE_PING_S`` asks), a newline every 5 seconds while a join or wait waits.
``Location`` headers are relative to the API's root, as ``langgraph dev`` sends them
(``/threads/{id}/runs/{run_id}/stream``, without ``/langgraph``): both SDKs resolve them against
their base URL (``http://host:8000/langgraph``), so their reconnect reaches this prefix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from agent_ng.contract import EventType
from agent_ng.persistence.threads import thread_config
from agent_ng.service.background import BackgroundRuns
from agent_ng.service.inputs import invalid
from agent_ng.service.langgraph_server.frames import FRAME, STREAM_MODES, Frames, run_status
from agent_ng.service.langgraph_server.run_records import RunRecord
from agent_ng.service.langgraph_server.schemas import dumps
from agent_ng.service.sse import EventStream, Final

log = logging.getLogger("agent_ng.service")

HEARTBEAT_S = 5.0
"""``langgraph_api``'s interval between ``: heartbeat`` comments, and between the newlines a
join or wait sends while it waits (JSON parsers skip leading whitespace)."""
RUN_NOT_FOUND = {"error": "HTTPException", "message": "404: Run not found"}
"""What ``langgraph dev`` answers a join of a run it does not know (with status 200)."""
HEARTBEAT = "heartbeat"
"""``langgraph_api``'s keep-alive comment."""
LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""What ends a line of an SSE event's data (sse_starlette's ``ServerSentEvent``)."""
CURSOR = re.compile(r"\d+(-\d+)?")
"""An event's id in a run's log: the in-process log's counter, or a Redis stream id."""
FROM_START = re.compile(r"-(\d+)?")
"""A ``Last-Event-ID`` before every event: the JS SDK's ``joinStream`` sends ``-1`` (and so does a
reloaded page), Redis names a stream's start ``-``; ``langgraph dev`` replays the run from its
start for these (its ids compare as text, and every id it sends is greater)."""


def stream_response(
    request: Request,
    runs: BackgroundRuns,
    run: RunRecord,
    on_lost: Callable[[], None] | None,
    headers: dict[str, str],
    *,
    before_end: asyncio.Task[None] | None = None,
) -> EventStream:
    """A new run's stream, from its first frame (``on_lost`` and ``before_end`` as ``sse_frames``)."""
    chunks = sse_frames(runs, run.run_id, None, run.kwargs["resumable"], on_lost=on_lost, before_end=before_end)
    return sse_response(request, chunks, headers)


def sse_response(request: Request, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> EventStream:
    """``chunks`` as ``text/event-stream``, with ``langgraph_api``'s ``: heartbeat`` comments."""
    ping = min(HEARTBEAT_S, request.app.state.settings.sse_ping_s)
    return EventStream(chunks, ping, headers, comment=lambda: HEARTBEAT)


async def sse_frames(
    runs: BackgroundRuns,
    run_id: str,
    after: str | None,
    resumable: bool,
    *,
    modes: list[str] | None = None,
    on_lost: Callable[[], None] | None = None,
    before_end: asyncio.Task[None] | None = None,
) -> AsyncIterator[bytes]:
    """The run's frames from its log as SSE text, all those ready at once in one chunk, to its
    ``run_end``; ``on_lost`` runs when the client goes before that; ``before_end`` (a stateless
    run's thread deletion) is waited for before the stream closes. A log that fails mid-stream
    ends it with an ``error`` frame."""
    ended = False
    batches = runs.events.read_batches(run_id, after)
    try:
        async for batch in batches:
            sent = []
            for line in batch:
                if (sse := Frames.sse(line, resumable)) is None:
                    ended = True
                    break
                event, data, id = sse
                if modes is None or event == "error" or mode_matches(event, modes):
                    sent.append(sse_text(event, data, id))
            chunk = "".join(sent).encode()
            if ended and before_end is None:
                yield Final(chunk)
            elif chunk:
                yield chunk
            if ended:
                break
        ended = True
        if before_end is not None:
            await asyncio.shield(before_end)
    except Exception as e:
        ended = True
        log.warning("stream of run %s ended: its event log failed: %s", run_id, e)
        yield sse_text("error", dumps({"error": type(e).__name__, "message": str(e)}).decode()).encode()
    finally:
        await batches.aclose()
        if not ended and on_lost is not None:
            on_lost()


def sse_text(event: str, data: str, id: str | None = None) -> str:
    """One SSE event, as sse_starlette's ``ServerSentEvent`` writes it."""
    head = f"event: {event}\r\n" if id is None else f"id: {id}\r\nevent: {event}\r\n"
    if "\n" in data or "\r" in data:
        return head + "".join(f"data: {line}\r\n" for line in LINE_BREAK.split(data)) + "\r\n"
    return f"{head}data: {data}\r\n\r\n"


def mode_matches(event: str, modes: list[str]) -> bool:
    """Whether a frame is of one of ``modes`` (``langgraph_runtime_inmem``'s join filter)."""
    if event in modes:
        return True
    if event.startswith("messages") and ("messages" in modes or "messages-tuple" in modes):
        return True
    return event.partition("|")[0] in modes


async def single(event: str, data: str) -> AsyncIterator[bytes]:
    """A stream of one SSE event."""
    yield Final(sse_text(event, data).encode())


def waiting_response(
    request: Request, runs: BackgroundRuns, run: RunRecord, on_lost: Callable[[], None] | None, *, stateful: bool
) -> StreamingResponse:
    """A wait's answer: the run's final values once it ended, newlines meanwhile."""
    result = outcome(runs, request.app.state.runner.graph, run.thread_id, run.run_id, stateful=stateful)
    return StreamingResponse(waiting(result, on_lost), media_type="application/json",
                             headers=join_headers(run.thread_id, run.run_id))


async def waiting(result: Awaitable[bytes], on_lost: Callable[[], None] | None = None) -> AsyncIterator[bytes]:
    """``result`` once ready, a newline every ``HEARTBEAT_S`` until then (as ``langgraph_api``)."""
    task = asyncio.ensure_future(result)
    try:
        while not task.done():
            await asyncio.wait([task], timeout=HEARTBEAT_S)
            if not task.done():
                yield b"\n"
        yield task.result()
    finally:
        if not task.done():
            task.cancel()
            if on_lost is not None:
                on_lost()


async def outcome(runs: BackgroundRuns, graph: Any, thread_id: str, run_id: str, *, stateful: bool = True) -> bytes:
    """What a join or wait answers once the run ended, read from its log as ``langgraph_api``'s
    ``_RunResult`` reads its stream: ``{"__error__": ...}`` if it failed, its interrupts if it
    stopped at some, else its last ``values``. A cancelled run's thread is settled after its last
    ``values`` (``agent_ng.graph.settle``: the stopped calls get their results), so its answer is
    the newest checkpoint it wrote, as ``GET /state`` shows it. Without values: the thread's
    (``{}`` for a stateless run: its thread is gone)."""
    error, interrupts, latest, cancelled = None, [], None, False
    async with aclosing(runs.events.read(run_id)) as entries:
        async for _, entry in entries:
            if entry.get("type") == EventType.RUN_END:
                cancelled = run_status(entry) == "interrupted"
            if entry.get("type") != FRAME:
                continue
            event, data = entry["event"], entry["data"]
            if event == "error":
                error = data
            elif event in ("values", "updates") and isinstance(data, dict) and "__interrupt__" in data:
                interrupts.append(data)
            elif event == "values":
                latest = data
    if error is not None:
        return dumps({"__error__": error})
    if len(interrupts) == 1:
        return dumps(interrupts[0])
    if interrupts:
        return dumps({"__interrupt__": [i for chunk in interrupts for i in chunk["__interrupt__"]]})
    if cancelled and (settled := await values_left_by(graph, thread_id, run_id)) is not None:
        return dumps(settled)
    if latest is not None:
        return dumps(latest)
    return dumps(await thread_result(graph, thread_id) if stateful else {})


async def values_left_by(graph: Any, thread_id: str, run_id: str) -> Any:
    """The values of the newest checkpoint ``run_id`` wrote (``run_config`` puts its id in the
    checkpoints' metadata); ``None`` when there is none (or the thread is gone)."""
    async for state in graph.aget_state_history(thread_config(thread_id), filter={"run_id": run_id}, limit=1):
        return state.values
    return None


async def thread_result(graph: Any, thread_id: str) -> Any:
    """The thread's values now, or its interrupts while it waits on them."""
    snapshot = await graph.aget_state(thread_config(thread_id))
    if snapshot.interrupts:
        return {"__interrupt__": list(snapshot.interrupts)}
    return snapshot.values or {}


def join_modes(stream_mode: str | None) -> list[str] | None:
    """The join's ``stream_mode`` query: one mode, or a JSON list of them (as the SDK sends)."""
    if not stream_mode:
        return None
    modes = [stream_mode]
    if stream_mode.startswith("["):
        try:
            modes = json.loads(stream_mode)
        except ValueError:
            invalid(("query", "stream_mode"), "not a stream mode nor a JSON list of them")
    if not isinstance(modes, list) or any(m not in STREAM_MODES for m in modes):
        invalid(("query", "stream_mode"), f"the stream modes are {', '.join(STREAM_MODES)}")
    return modes


def cursor_of(last_event_id: str | None) -> str | None:
    """The log cursor a ``Last-Event-ID`` names (an id this server sent, or ``0``); ``None``
    (the run's start) for none, ``-`` or a negative number."""
    given = (last_event_id or "").strip()
    if not given or FROM_START.fullmatch(given):
        return None
    if CURSOR.fullmatch(given) is None:
        invalid(("header", "last-event-id"), "not an event id this server sent, nor -1 (from the start)")
    return given


def stream_headers(thread_id: str, run_id: str) -> dict[str, str]:
    """Where a run's stream is joined again (``Location``) and where the run is read."""
    return {"Location": f"/threads/{thread_id}/runs/{run_id}/stream",
            "Content-Location": f"/threads/{thread_id}/runs/{run_id}"}


def join_headers(thread_id: str, run_id: str) -> dict[str, str]:
    """Where a wait is taken up again (``Location``: the join) and where the run is read."""
    return {"Location": f"/threads/{thread_id}/runs/{run_id}/join",
            "Content-Location": f"/threads/{thread_id}/runs/{run_id}"}
