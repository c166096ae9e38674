"""The LangGraph Server API's runs: what ``langgraph_sdk``'s ``client.runs`` and ``RemoteGraph`` call.

| route | what |
| --- | --- |
| ``POST /threads/{id}/runs/stream``, ``POST /runs/stream`` | start a run and stream it (SSE) |
| ``POST /threads/{id}/runs`` | start a run in the background: the run's record |
| ``POST /threads/{id}/runs/wait``, ``POST /runs/wait`` | start a run and answer its final values |
| ``GET /threads/{id}/runs``, ``GET /threads/{id}/runs/{run_id}`` | the thread's runs, one run |
| ``GET /threads/{id}/runs/{run_id}/join`` | wait for a run: its final values |
| ``GET /threads/{id}/runs/{run_id}/stream`` | join a run's stream (after ``Last-Event-ID``) |
| ``POST /threads/{id}/runs/{run_id}/cancel`` | cancel a run (``wait``: answer its values once it stopped) |

Each run is a background run of the service (``agent_ng.service.background``), on the thread
locks, checkpointer and tool engine the native routes use; its log holds the frames ``langgraph
dev`` sends (``frames.Frames``), so a stream, a join and a reconnect all read the same log. A
run's record (``run_records``) has its final status before its stream closes: ``langgraph_sdk``
re-opens a closed stream while the run still reads ``pending`` or ``running``.

What a run body may hold and how it is checked (422s where this server differs from ``langgraph
dev``): ``run_bodies``; how a run is answered (its SSE stream, a join's or wait's values):
``run_answers``. Here: the routes, and starting and cancelling runs.

Thread ids follow the service's id rule (any id the native routes take), not only UUIDs. New
input on a thread waiting for approval is refused (409) as on the native routes: resume it with
``command``. A thread's runs are this replica's (the records are kept in its process), so
``multitask_strategy="interrupt"`` cancels those, and a native run ahead is waited for; a run's
stream, join and cancel reach it on any replica sharing the Redis event log. ``"rollback"`` (and
cancel ``action="rollback"``) cancels as ``"interrupt"`` does, then deletes what the runs wrote
and their records (``roll_back``), as ``langgraph dev`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from dataclasses import asdict
from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from agent_ng.contract import AgentEvent, EventType
from agent_ng.graph.events import Part, is_new_input
from agent_ng.persistence.run_deletion import RunDeletionRefusedError
from agent_ng.persistence.thread_records import thread_exists, update_thread
from agent_ng.persistence.threads import saver_of, thread_config
from agent_ng.service.background import BackgroundRuns
from agent_ng.service.inputs import RunId, ThreadId
from agent_ng.service.langgraph_server.assistants import ASSISTANT_ID, GRAPH_ID
from agent_ng.service.langgraph_server.frames import Frames, run_status
from agent_ng.service.langgraph_server.run_answers import (
    RUN_NOT_FOUND,
    cursor_of,
    join_headers,
    join_modes,
    outcome,
    single,
    sse_frames,
    sse_response,
    stream_headers,
    stream_response,
    thread_result,
    waiting,
    waiting_response,
)
from agent_ng.service.langgraph_server.run_bodies import (
    NOT_FOUND,
    RunBody,
    StatelessRunBody,
    ThreadRunBody,
    checkpoint_of,
    durability_of,
    graph_input,
    known_assistant,
    no_checkpoint,
    run_config,
    run_kwargs,
)
from agent_ng.service.langgraph_server.run_records import RunRecord, RunRecords, RunStatus
from agent_ng.service.langgraph_server.schemas import ApiJSON, dumps, selected
from agent_ng.service.sse import EventStream

log = logging.getLogger("agent_ng.service")

router = APIRouter()

BUSY = "Thread is already running a task. Wait for it to finish or choose a different multitask strategy."
RUN_FIELDS = ("run_id", "thread_id", "assistant_id", "metadata", "status", "kwargs",
              "multitask_strategy", "created_at", "updated_at")

_tasks: dict[str, asyncio.Task[None]] = {}
"""Work no response waits for: a stateless run's thread deletion (under its run id, so its
stream waits for it before closing), a cancel asked of another replica by a client that left."""


@router.post("/threads/{thread_id}/runs/stream", summary="Start a run on the thread and stream it")
async def stream_run(thread_id: ThreadId, body: ThreadRunBody, request: Request) -> EventStream:
    """Start a run; SSE: ``metadata``, then the frames of the stream modes asked for."""
    run = await create_run(request, thread_id, body, streamed=True)
    runs = runs_of(request)
    lost = cancel_if_lost(runs, run.run_id, body.on_disconnect == "cancel")
    return stream_response(request, runs, run, lost, stream_headers(thread_id, run.run_id))


@router.post("/runs/stream", summary="Start a run on a new thread and stream it")
async def stream_stateless_run(body: StatelessRunBody, request: Request) -> EventStream:
    """A stateless run: its thread is deleted after it (unless ``on_completion`` is ``"keep"``)."""
    run = await create_run(request, str(uuid4()), body, streamed=True)
    runs = runs_of(request)
    lost = cancel_if_lost(runs, run.run_id, body.on_disconnect == "cancel")
    headers = {"Location": f"/runs/{run.run_id}/stream", "Content-Location": f"/runs/{run.run_id}"}
    return stream_response(request, runs, run, lost, headers, before_end=_tasks.get(run.run_id))


@router.post("/threads/{thread_id}/runs", summary="Start a run on the thread in the background")
async def start_run(thread_id: ThreadId, body: ThreadRunBody, request: Request) -> ApiJSON:
    """The run's record, at once (``pending``); join it, stream it or read it by its id."""
    run = await create_run(request, thread_id, body)
    return ApiJSON(run.to_json(), headers={"Content-Location": f"/threads/{thread_id}/runs/{run.run_id}"})


@router.post("/threads/{thread_id}/runs/wait", summary="Start a run on the thread and wait for its values")
async def wait_run(thread_id: ThreadId, body: ThreadRunBody, request: Request) -> StreamingResponse:
    """The thread's values once the run ends (``__error__`` if it failed, ``__interrupt__`` if it waits)."""
    run = await create_run(request, thread_id, body, wait=True, streamed=True)
    runs = runs_of(request)
    lost = cancel_if_lost(runs, run.run_id, body.on_disconnect == "cancel")
    return waiting_response(request, runs, run, lost, stateful=True)


@router.post("/runs/wait", summary="Start a run on a new thread and wait for its values")
async def wait_stateless_run(body: StatelessRunBody, request: Request) -> StreamingResponse:
    """``/runs/stream``'s run, answered as ``/threads/{id}/runs/wait`` answers."""
    run = await create_run(request, str(uuid4()), body, wait=True, streamed=True)
    runs = runs_of(request)
    lost = cancel_if_lost(runs, run.run_id, body.on_disconnect == "cancel")
    return waiting_response(request, runs, run, lost, stateful=False)


@router.get("/threads/{thread_id}/runs", summary="The thread's runs, newest first")
async def list_runs(
    thread_id: ThreadId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: RunStatus | None = None,
    select: Annotated[list[Literal[RUN_FIELDS]] | None, Query()] = None,
) -> ApiJSON:
    """This replica's records of the thread's runs (``status`` filters, ``select`` picks fields)."""
    await thread_known(request, thread_id)
    runs = [r for r in records_of(request).of_thread(thread_id) if status is None or r.status == status]
    return ApiJSON([selected(r.to_json(), select) for r in runs[offset : offset + limit]])


@router.get("/threads/{thread_id}/runs/{run_id}", summary="One run of the thread")
async def get_run(thread_id: ThreadId, run_id: RunId, request: Request) -> ApiJSON:
    """The run's record: 404 for an unknown thread (as for an unknown run), as ``langgraph dev``."""
    await thread_known(request, thread_id)
    run = records_of(request).get(run_id)
    if run is None or run.thread_id != thread_id:
        raise HTTPException(404, "Not Found")
    return ApiJSON(run.to_json())


@router.get("/threads/{thread_id}/runs/{run_id}/join", summary="Wait for a run to end: the thread's values")
async def join_run(
    thread_id: ThreadId, run_id: RunId, request: Request, cancel_on_disconnect: bool = False
) -> StreamingResponse:
    """The run's final values once it ended; a run the log does not hold answers 200 with
    ``{"__error__": ...}``, as ``langgraph dev`` does."""
    runs = runs_of(request)
    if await runs.events.thread_of(run_id) != thread_id:
        return StreamingResponse(iter([dumps({"__error__": RUN_NOT_FOUND})]), media_type="application/json")
    result = outcome(runs, request.app.state.runner.graph, thread_id, run_id)
    lost = cancel_if_lost(runs, run_id, cancel_on_disconnect)
    return StreamingResponse(
        waiting(result, lost), media_type="application/json", headers=join_headers(thread_id, run_id)
    )


@router.get("/threads/{thread_id}/runs/{run_id}/stream", summary="Join a run's stream")
async def join_run_stream(
    thread_id: ThreadId,
    run_id: RunId,
    request: Request,
    cancel_on_disconnect: bool = False,
    stream_mode: str | None = None,
    last_event_id: str | None = Header(default=None),
) -> EventStream:
    """The run's frames from its start, or after ``Last-Event-ID``, then live until it ends;
    ``stream_mode`` (one mode, or a JSON list) keeps only those modes' frames."""
    runs = runs_of(request)
    modes = join_modes(stream_mode)
    after = cursor_of(last_event_id)
    headers = stream_headers(thread_id, run_id)
    if await runs.events.thread_of(run_id) != thread_id:
        return sse_response(request, single("error", json.dumps(RUN_NOT_FOUND)), headers)
    run = records_of(request).get(run_id)
    resumable = run.kwargs["resumable"] if run is not None else True
    lost = cancel_if_lost(runs, run_id, cancel_on_disconnect)
    events = sse_frames(runs, run_id, after, resumable, modes=modes, on_lost=lost)
    return sse_response(request, events, headers)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", summary="Cancel a run")
async def cancel_run(
    thread_id: ThreadId,
    run_id: RunId,
    request: Request,
    wait: bool = False,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    """202 once asked (the run of this replica has stopped by then); with ``wait``, 200 with the
    thread's values once the run has ended, wherever it ran. A run that ended: 404.

    ``action="rollback"``: 202 once the run's checkpoints and record are deleted too, ``wait``
    answering the thread's values as they were before it; a running run with runs queued behind
    it is only cancelled (they start as it stops, from what it wrote), logged."""
    runs, records = runs_of(request), records_of(request)
    if await runs.events.thread_of(run_id) != thread_id:
        raise HTTPException(404, "No runs found to cancel.")
    if await runs.events.ended(run_id):
        raise HTTPException(
            404,
            "No matching runs to cancel. Please verify the thread ID and run IDs are correct, "
            "and the runs haven't been deleted or completed.",
        )
    rolling_back = action == "rollback"
    if rolling_back and queued_behind(records, thread_id, run_id):
        log.warning("run %s was not rolled back, only cancelled: runs queued behind it build on it", run_id)
        rolling_back = False
    await cancel(runs, run_id)
    rolled_back = rolling_back and await roll_back(request, [run_id])
    if not wait:
        return Response(status_code=202)
    graph = request.app.state.runner.graph
    result = values_now(graph, thread_id) if rolled_back else outcome(runs, graph, thread_id, run_id)
    return StreamingResponse(waiting(result), media_type="application/json", headers=join_headers(thread_id, run_id))


async def create_run(
    request: Request,
    thread_id: str,
    body: ThreadRunBody | StatelessRunBody,
    *,
    wait: bool = False,
    streamed: bool = False,
) -> RunRecord:
    """Check the body, make the thread ready (as ``multitask_strategy`` says) and start the run.

    The order is ``langgraph dev``'s: a bad body (422) before an unknown thread (404) before a
    busy one (409). A ``streamed`` run (its client waits on it) past ``AGENT_MAX_RUNS`` gets
    503 (``AGENT_STREAM_OVERLOAD``) before anything is done; another waits its turn."""
    stateful = isinstance(body, ThreadRunBody)
    known_assistant(body.assistant_id)
    graph, runs, records = request.app.state.runner.graph, runs_of(request), records_of(request)
    input = graph_input(body, request, stateful)
    if streamed:
        runs.admit(request.app.state.settings.stream_overload)
    checkpoint_id = checkpoint_of(body, thread_id) if stateful else no_checkpoint(body)
    thread_metadata = await thread_for_run(graph, thread_id, body)
    if checkpoint_id is not None and await saver_of(graph).aget_tuple(thread_config(thread_id, checkpoint_id)) is None:
        raise HTTPException(404, f"Checkpoint {checkpoint_id} of thread {thread_id} not found")
    if stateful:
        await take_turn(request, thread_id, body.multitask_strategy, input)

    run_id = str(uuid4())
    metadata = {"created_by": "system", **thread_metadata, **body.config.metadata, **(body.metadata or {}),
                "assistant_id": ASSISTANT_ID}
    config = run_config(body.config, checkpoint_id, metadata, run_id, thread_id)
    temporary = not stateful and body.on_completion == "delete"
    strategy = body.multitask_strategy if stateful else "enqueue"
    run = RunRecord(run_id, thread_id, ASSISTANT_ID, metadata, strategy, run_kwargs(body, config, temporary))
    modes = body.modes()
    frames = Frames([*modes, "values"] if wait and "values" not in modes else modes, body.stream_subgraphs)
    stream_kwargs: dict[str, Any] = {"parts": frames.parts, "subgraphs": body.stream_subgraphs,
                                     "durability": durability_of(body)}
    if body.context:
        stream_kwargs["context"] = body.context
    records.add(run)
    try:
        spec = {"stream_mode": list(frames.stream_mode), "subgraphs": frames.subgraphs, "run": asdict(run)}
        await runs.start(thread_id, input, config, kind=KIND, spec=spec, run_id=run_id, **stream_kwargs)
    except BaseException:
        records.discard(run_id)
        raise
    if temporary:
        keep_task(run_id, delete_when_ended(runs, records, graph, run_id, thread_id))
    return run


async def thread_for_run(graph: Any, thread_id: str, body: RunBody) -> dict[str, Any]:
    """The run's thread's metadata, with the graph and assistant noted in it as ``langgraph
    dev`` notes them; a thread that does not exist is created (with the run's metadata) for a
    stateless run or ``if_not_exists="create"``, else 404."""
    ids = {"graph_id": GRAPH_ID, "assistant_id": ASSISTANT_ID}
    record = None
    if isinstance(body, ThreadRunBody):
        record = await update_thread(graph, thread_id, ids, create=False)
        if record is None and body.if_not_exists != "create":
            raise HTTPException(404, NOT_FOUND)
    if record is None:
        record = await update_thread(graph, thread_id, {**ids, **body.config.metadata, **(body.metadata or {})})
    return record.metadata


async def take_turn(request: Request, thread_id: str, strategy: str, input: Any) -> None:
    """Apply ``multitask_strategy`` on a busy thread: ``reject`` is a 409, ``interrupt`` cancels
    the thread's runs first (newest first: the queued ones never start), ``rollback`` also deletes
    what they wrote, ``enqueue`` lets the run wait its turn (the runner's queue). New input on a
    thread waiting for approval is refused (409) unless a run is ahead of it (that run's end
    decides)."""
    runner, runs = request.app.state.runner, runs_of(request)
    ahead = records_of(request).active(thread_id)
    if strategy == "reject" and (ahead or runner.busy(thread_id)):
        raise HTTPException(409, BUSY)
    if strategy in ("interrupt", "rollback"):
        for run in ahead:
            await cancel(runs, run.run_id)
    if strategy == "rollback" and ahead:
        await roll_back(request, [run.run_id for run in ahead])
    if is_new_input(input) and not runner.busy(thread_id):
        await runner.ready(thread_id)


KIND = "langgraph"
"""The kind of a LangGraph Server API run among the service's runs (``BackgroundRuns.kinds``)."""


def run_kind(records: RunRecords) -> Callable[[str, dict[str, Any]], Callable[[AgentEvent | Part], list[dict[str, Any]]]]:
    """How a run of this API writes its log, made from its ``spec`` on the replica that runs
    it: its first one, or one that took it over (which then keeps the run's record too)."""

    def record_of(run_id: str, spec: dict[str, Any]) -> Callable[[AgentEvent | Part], list[dict[str, Any]]]:
        if records.get(run_id) is None:
            records.add(RunRecord(**spec["run"]))
        return recorder(records, run_id, Frames(spec["stream_mode"], spec["subgraphs"]))

    return record_of


def recorder(records: RunRecords, run_id: str, frames: Frames) -> Callable[[AgentEvent | Part], list[dict[str, Any]]]:
    """The run's log entries (``Frames.record``), noting in its record when it starts and how it
    ends: the status is set before the ``run_end`` reaches the log, so before any stream ends."""

    def record(item: AgentEvent | Part) -> list[dict[str, Any]]:
        entries = frames.record(item)
        if type(item) is AgentEvent:
            if item.type == EventType.RUN_START:
                records.set_status(run_id, "running")
            elif item.type == EventType.RUN_END:
                records.set_status(run_id, run_status(item.to_dict()))
        return entries

    return record


async def roll_back(request: Request, run_ids: list[str]) -> bool:
    """Delete what stopped runs wrote (``adelete_for_runs``) and their records, as ``langgraph
    dev`` deletes a run rolled back: their thread is as it was before them. Each run's log is read
    to its end first (a run of another replica has stopped and settled there). When the saver
    refuses (``RunDeletionRefusedError``: retention pruned what came before, or a later checkpoint
    stands on them) they stay as ``interrupt`` leaves them, logged, and the answer is False."""
    for run_id in run_ids:
        await until_ended(runs_of(request), run_id)
    try:
        await saver_of(request.app.state.runner.graph).adelete_for_runs(run_ids)
    except RunDeletionRefusedError as e:
        log.warning("%s; it stays as cancelled", e)
        return False
    for run_id in run_ids:
        records_of(request).discard(run_id)
    return True


def queued_behind(records: RunRecords, thread_id: str, run_id: str) -> bool:
    """Whether runs wait behind the running ``run_id``: they start as soon as it stops, on what it
    wrote, so deleting that would pull the ground from under them."""
    run = records.get(run_id)
    return run is not None and run.status == "running" and len(records.active(thread_id)) > 1


async def values_now(graph: Any, thread_id: str) -> bytes:
    """What a rolled-back run's cancel with ``wait`` answers: the thread's values, as before it."""
    return dumps(await thread_result(graph, thread_id))


async def until_ended(runs: BackgroundRuns, run_id: str) -> None:
    """Return once the run's log has its ``run_end``."""
    async with aclosing(runs.events.read(run_id)) as entries:
        async for _ in entries:
            pass


async def delete_when_ended(runs: BackgroundRuns, records: RunRecords, graph: Any, run_id: str, thread_id: str) -> None:
    """Delete a stateless run's thread (checkpoints and record) once its run has ended."""
    try:
        await until_ended(runs, run_id)
        await saver_of(graph).adelete_thread(thread_id)
        records.forget_thread(thread_id)
    except Exception as e:
        log.warning("stateless run %s: its thread %s was not deleted: %s", run_id, thread_id, e)


async def cancel(runs: BackgroundRuns, run_id: str) -> None:
    """Cancel the run: here, waiting until it has stopped; on another replica, by asking it."""
    if not await runs.cancel(run_id) and not await runs.events.ended(run_id):
        await runs.events.ask_cancel(run_id)


def cancel_if_lost(runs: BackgroundRuns, run_id: str, wanted: bool) -> Callable[[], None] | None:
    """What an answer does when its client leaves before the run ends (``on_lost``): cancel the
    run if the client asked for it (``on_disconnect="cancel"``, ``cancel_on_disconnect``), else
    nothing: the run goes on."""
    return (lambda: cancel_soon(runs, run_id)) if wanted else None


def cancel_soon(runs: BackgroundRuns, run_id: str) -> None:
    """``cancel`` from a response being torn down (nothing can be awaited there)."""
    if runs.running(run_id):
        runs.cancel_soon(run_id)
    else:
        keep_task(f"cancel:{run_id}", cancel(runs, run_id))


def keep_task(key: str, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` in a task held in ``_tasks`` until it is done (a bare task may be collected)."""
    task = asyncio.create_task(work)
    _tasks[key] = task
    task.add_done_callback(lambda _: _tasks.pop(key, None))


async def thread_known(request: Request, thread_id: str) -> None:
    """404 as ``langgraph dev`` words it, unless the thread exists (a record or checkpoints)."""
    if not await thread_exists(request.app.state.runner.graph, thread_id):
        raise HTTPException(404, f"Thread with ID {thread_id} not found")


def runs_of(request: Request) -> BackgroundRuns:
    """The service's background runs (and through them, the event log)."""
    return request.app.state.runs


def records_of(request: Request) -> RunRecords:
    """This process's records of the API's runs."""
    return request.app.state.run_records
