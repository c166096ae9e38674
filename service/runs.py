"""Runs over HTTP: streamed as Server-Sent Events, started in the background, joined, cancelled.

Each SSE event is named after the event's type, carries its JSON (``AgentEvent.to_dict``) and
an ``id`` (``<run_id>:<cursor>``, increasing within the run)::

    id: 0b6f...:7
    event: tool_progress
    data: {"type": "tool_progress", "run_id": "...", "tool_call_id": "call_1", "progress": 0.5, ...}

| route | what |
| --- | --- |
| ``POST /threads/{id}/runs/stream`` | ask and stream; with ``Last-Event-ID``, resume that run |
| ``POST /threads/{id}/runs`` | ask in the background: ``{"run_id", "thread_id"}`` at once |
| ``GET /threads/{id}/runs/{run_id}`` | the run's status and ``attempt`` |
| ``GET /threads/{id}/runs/{run_id}/stream`` | join: from the start (or ``Last-Event-ID``), live |
| ``POST /threads/{id}/runs/{run_id}/cancel`` | cancel: 200 once settled (or still queued), 202 if on another replica |

Every run is a task writing to the event log (``agent_ng.service.background``); a stream reads the log,
so a reconnect gets exactly the events it missed. The log's JSON text goes out as it is kept, and
all the events ready when the stream wakes go in one chunk: one write to the socket. A streaming client that goes away cancels
its run (``on_disconnect: "cancel"``, the default) or leaves it going (``"continue"``). An idle
stream gets a keep-alive comment every ``AGENT_SSE_PING_S`` seconds. A question on a thread
whose calls wait for approval gets 409 and changes nothing. When a store the runs need (the
checkpoint database, the Redis event log) cannot be reached, a route answers 503 with one line
naming it, and a stream whose log fails ends with a ``run_end`` of status ``error`` saying so.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from agent_ng.contract import AgentEvent, EventType
from agent_ng.service.background import BackgroundRuns, one_line
from agent_ng.service.event_log import END, Line, event_id, event_json, parse_event_id
from agent_ng.service.inputs import RunId, RunRequest, ThreadId, check_question, invalid
from agent_ng.service.sse import EventStream, Final

log = logging.getLogger("agent_ng.service")

router = APIRouter()


@router.post(
    "/threads/{thread_id}/runs/stream", summary="Ask a question, streaming the run's events"
)
async def stream_run(
    thread_id: ThreadId,
    body: RunRequest,
    request: Request,
    last_event_id: str | None = Header(default=None),
) -> EventStream:
    """Start a run and stream its events; with ``Last-Event-ID``, stream that run again from there."""
    settings = request.app.state.settings
    check_question(body.input, settings, loc=("body", "input"))
    runs: BackgroundRuns = request.app.state.runs
    if last_event_id is not None:
        run_id, after = await joined(runs, thread_id, last_event_id)
    else:
        after = None
        run_id = await start(runs, request, thread_id, body, overload=settings.stream_overload)

    def lost() -> None:
        if body.on_disconnect == "cancel":
            runs.cancel_soon(run_id)

    batches = runs.events.read_batches(run_id, after)
    return EventStream(sse_events(run_id, thread_id, batches, on_lost=lost), ping=settings.sse_ping_s)


@router.post("/threads/{thread_id}/runs", status_code=202, summary="Start a run in the background")
async def start_run(thread_id: ThreadId, body: RunRequest, request: Request) -> dict[str, str]:
    """Start a run that goes on without a client; join its stream with the run id."""
    check_question(body.input, request.app.state.settings, loc=("body", "input"))
    run_id = await start(request.app.state.runs, request, thread_id, body)
    return {"run_id": run_id, "thread_id": thread_id}


@router.get("/threads/{thread_id}/runs/{run_id}/stream", summary="Join a run's event stream")
async def join_run(
    thread_id: ThreadId,
    run_id: RunId,
    request: Request,
    last_event_id: str | None = Header(default=None),
) -> EventStream:
    """Stream a run's events from its start, or after ``Last-Event-ID``, then live until it ends."""
    runs: BackgroundRuns = request.app.state.runs
    after = None
    if last_event_id is not None:
        given, after = await joined(runs, thread_id, last_event_id)
        if given != run_id:
            invalid(("header", "last-event-id"), f"the event id is of run {given}, not {run_id}")
    else:
        await known(runs, thread_id, run_id)
    return EventStream(
        sse_events(run_id, thread_id, runs.events.read_batches(run_id, after)),
        ping=request.app.state.settings.sse_ping_s,
    )


@router.get("/threads/{thread_id}/runs/{run_id}", summary="A run's status and attempt")
async def get_run(thread_id: ThreadId, run_id: RunId, request: Request) -> dict[str, Any]:
    """``status`` (``pending``, ``running``, or how it ended: the ``run_end`` statuses) and
    ``attempt`` (above 1 once another replica took the run over); 404 for an unknown run."""
    described = await request.app.state.runs.describe(run_id, thread_id)
    if described is None:
        raise HTTPException(404, f"no run {run_id} on thread {thread_id} (unknown or expired)")
    return described


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", summary="Cancel a run")
async def cancel_run(thread_id: ThreadId, run_id: RunId, request: Request) -> JSONResponse:
    """200 once a run of this replica has settled; 202 when another replica is asked to."""
    runs: BackgroundRuns = request.app.state.runs
    await known(runs, thread_id, run_id)
    if await runs.cancel(run_id) or await runs.cancel_queued(run_id, thread_id):
        return JSONResponse({"run_id": run_id, "status": "cancelled"})
    if await runs.events.ended(run_id):
        raise HTTPException(409, f"run {run_id} has ended")
    await runs.events.ask_cancel(run_id)
    return JSONResponse({"run_id": run_id, "status": "cancelling"}, status_code=202)


async def start(
    runs: BackgroundRuns, request: Request, thread_id: str, body: RunRequest, overload: str = "queue"
) -> str:
    """Start the run; a thread that waits for approval is refused now (409) unless a run is ahead
    of it; past ``AGENT_MAX_RUNS`` a streamed run may be refused (503, ``OverloadedError``)."""
    if not await runs.busy(thread_id):  # a run ahead of this one is checked when it ends
        await request.app.state.runner.ready(thread_id)
    return await runs.start(thread_id, body.input, body.config.to_config(), overload=overload)


async def known(runs: BackgroundRuns, thread_id: str, run_id: str) -> None:
    """404 unless ``run_id`` is a run of ``thread_id`` that the log still holds."""
    if await runs.events.thread_of(run_id) != thread_id:
        raise HTTPException(404, f"no run {run_id} on thread {thread_id} (unknown or expired)")


async def joined(runs: BackgroundRuns, thread_id: str, last_event_id: str) -> tuple[str, str]:
    """The run and cursor a ``Last-Event-ID`` points at, checked to be a run of ``thread_id``."""
    parsed = parse_event_id(last_event_id)
    if parsed is None:
        invalid(("header", "last-event-id"), "not an event id of this service (<run_id>:<cursor>)")
    await known(runs, thread_id, parsed[0])
    return parsed


async def sse_events(
    run_id: str,
    thread_id: str,
    batches: AsyncIterator[list[Line]],
    on_lost: Callable[[], None] = lambda: None,
) -> AsyncIterator[bytes]:
    """The log's entries as SSE events, each batch in one chunk; ``on_lost`` runs when the stream
    stops before ``run_end``.

    A log that fails mid-stream (Redis gone) still ends the stream with a ``run_end``, status
    ``error``, saying why; it has no ``id`` (it is not in the log), so a reconnect asks for what
    followed the last event received.
    """
    ended, last = False, ""
    try:
        try:
            async for batch in batches:
                ended, last = batch[-1][1] == END, batch[-1][2]
                chunk = "".join(
                    f"id: {event_id(run_id, cursor)}\r\nevent: {kind}\r\ndata: {text}\r\n\r\n"
                    for cursor, kind, text in batch
                ).encode()
                yield Final(chunk) if ended else chunk
        except Exception as e:
            log.warning("stream of run %s ended: its event log failed: %s", run_id, e)
            t = orjson.loads(last).get("t", 0.0) if last else 0.0
            end = AgentEvent(EventType.RUN_END, run_id, thread_id, t, status="error", error=one_line(e))
            yield Final(f"event: {END}\r\ndata: {event_json(end.to_dict())}\r\n\r\n".encode())
    finally:
        await batches.aclose()
        if not ended:
            on_lost()
