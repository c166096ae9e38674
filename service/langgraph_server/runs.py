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

Answers are ``langgraph dev``'s (``langgraph_api`` 0.16.7): its status codes, bodies and
headers, ``on_disconnect`` ``"continue"`` by default, ``: heartbeat`` comments every 5 seconds
(sooner if ``AGENT_SSE_PING_S`` asks), a newline every 5 seconds while a join or wait waits.
``Location`` headers are relative to the API's root, as ``langgraph dev`` sends them
(``/threads/{id}/runs/{run_id}/stream``, without ``/langgraph``): both SDKs resolve them against
their base URL (``http://host:8000/langgraph``), so their reconnect reaches this prefix.

Where this server differs, it says so with a 422 rather than ignore a request: an unknown body
field or stream mode, both ``input`` and ``command`` (``langgraph dev`` drops the input),
``multitask_strategy`` / ``action`` ``"rollback"`` (our checkpointers cannot delete one run's
checkpoints), ``interrupt_before`` / ``interrupt_after``, webhooks, ``after_seconds``, input
keys other than ``messages``, LangGraph's internal configurable keys.
Thread ids follow the service's id rule (any id the native routes take), not only UUIDs. New
input on a thread waiting for approval is refused (409) as on the native routes: resume it with
``command``. ``durability`` defaults to ``"sync"`` (each step stored before its tools start),
not ``"async"``. A thread's runs are this replica's (the records are kept in its process), so
``multitask_strategy="interrupt"`` cancels those, and a native run ahead is waited for; a run's
stream, join and cancel reach it on any replica sharing the Redis event log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import langgraph.version
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from langchain_core.messages import convert_to_messages
from langgraph.types import Command
from pydantic import Field, field_validator
from sse_starlette import EventSourceResponse, ServerSentEvent

from agent_ng.contract import AgentEvent, EventType
from agent_ng.graph.events import Part, is_new_input
from agent_ng.persistence.thread_records import thread_exists, update_thread
from agent_ng.persistence.threads import saver_of, thread_config
from agent_ng.service.background import BackgroundRuns
from agent_ng.service.inputs import RunId, ThreadId, invalid, not_text
from agent_ng.service.langgraph_server.assistants import ASSISTANT_ID, GRAPH_ID
from agent_ng.service.langgraph_server.frames import (
    FRAME,
    STREAM_MODES,
    Frames,
    run_status,
)
from agent_ng.service.langgraph_server.run_records import RunRecord, RunRecords, RunStatus
from agent_ng.service.langgraph_server.schemas import ApiJSON, Body, CheckpointConfig, dumps, selected

log = logging.getLogger("agent_ng.service")

router = APIRouter()

HEARTBEAT_S = 5.0
"""``langgraph_api``'s interval between ``: heartbeat`` comments, and between the newlines a
join or wait sends while it waits (JSON parsers skip leading whitespace)."""
NOT_FOUND = "Thread or assistant not found."
BUSY = "Thread is already running a task. Wait for it to finish or choose a different multitask strategy."
RUN_NOT_FOUND = {"error": "HTTPException", "message": "404: Run not found"}
"""What ``langgraph dev`` answers a join of a run it does not know (with status 200)."""
BOTH_CONTEXTS = (
    "Cannot specify both configurable and context. Prefer setting context alone. Context was "
    "introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable."
)
SERVER_KEYS = frozenset({"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map"})
"""``configurable`` keys that address the run's checkpoint rather than configure the graph."""
INPUT_KEYS = ("messages",)
"""The agent's input: its conversation (the rest of its state is its own)."""
NO_ROLLBACK = (
    "'rollback' is not supported: the service's checkpointers cannot delete one run's "
    "checkpoints; use 'interrupt' (the run stops, what it finished is kept)"
)
RUN_FIELDS = ("run_id", "thread_id", "assistant_id", "metadata", "status", "kwargs",
              "multitask_strategy", "created_at", "updated_at")
CURSOR = re.compile(r"\d+(-\d+)?")
"""An event's id in a run's log: the in-process log's counter, or a Redis stream id."""
FROM_START = re.compile(r"-(\d+)?")
"""A ``Last-Event-ID`` before every event: the JS SDK's ``joinStream`` sends ``-1`` (and so does a
reloaded page), Redis names a stream's start ``-``; ``langgraph dev`` replays the run from its
start for these (its ids compare as text, and every id it sends is greater)."""

StreamMode = Literal[STREAM_MODES]

_tasks: dict[str, asyncio.Task[None]] = {}
"""Work no response waits for: a stateless run's thread deletion (under its run id, so its
stream waits for it before closing), a cancel asked of another replica by a client that left."""


class RunConfigBody(Body):
    """``config``: the part of LangGraph's run config a client may set."""

    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    configurable: dict[str, Any] = Field(default_factory=dict)
    recursion_limit: int | None = Field(default=None, ge=1, le=10_000)
    max_concurrency: int | None = Field(default=None, ge=1, le=64)


class CommandBody(Body):
    """``command``: resume an interrupt (an approval), update the state, go to a node.

    ``graph`` is there because ``RemoteGraph`` sends a whole ``Command`` (``graph: null``);
    only the graph itself can be meant."""

    resume: Any = None
    update: dict[str, Any] | None = None
    goto: str | list[str] | None = None
    graph: None = None


class RunBody(Body):
    """What every run body may hold (``langgraph_api``'s ``RunCreateStateless``)."""

    assistant_id: str
    input: dict[str, Any] | None = None
    command: CommandBody | None = None
    metadata: dict[str, Any] | None = None
    config: RunConfigBody = Field(default_factory=RunConfigBody)
    context: dict[str, Any] | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    on_disconnect: Literal["cancel", "continue"] = "continue"
    durability: Literal["sync", "async", "exit"] | None = None
    checkpoint_during: bool | None = None

    def modes(self) -> list[str]:
        """The stream modes asked for; ``values`` when none is (as ``langgraph_api`` defaults)."""
        modes = self.stream_mode if isinstance(self.stream_mode, list) else [self.stream_mode]
        return list(dict.fromkeys(modes)) or ["values"]


class ThreadRunBody(RunBody):
    """A run on a thread (``RunCreateStateful``)."""

    checkpoint: CheckpointConfig | None = None
    checkpoint_id: str | None = None
    if_not_exists: Literal["create", "reject"] = "reject"
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "enqueue"

    @field_validator("multitask_strategy")
    @classmethod
    def _no_rollback(cls, value: str) -> str:
        if value == "rollback":
            raise ValueError(NO_ROLLBACK)
        return value


class StatelessRunBody(RunBody):
    """A run on a new thread of its own, deleted after it unless ``on_completion`` keeps it.

    ``if_not_exists`` is taken for what it is there, the new thread being made (``RemoteGraph``
    sends ``"create"`` whether it has a thread or not)."""

    on_completion: Literal["delete", "keep"] = "delete"
    if_not_exists: Literal["create", "reject"] | None = None


@router.post("/threads/{thread_id}/runs/stream", summary="Start a run on the thread and stream it")
async def stream_run(thread_id: ThreadId, body: ThreadRunBody, request: Request) -> EventSourceResponse:
    """Start a run; SSE: ``metadata``, then the frames of the stream modes asked for."""
    run = await create_run(request, thread_id, body)
    return stream_response(request, run, body.on_disconnect == "cancel", stream_headers(thread_id, run.run_id))


@router.post("/runs/stream", summary="Start a run on a new thread and stream it")
async def stream_stateless_run(body: StatelessRunBody, request: Request) -> EventSourceResponse:
    """A stateless run: its thread is deleted after it (unless ``on_completion`` is ``"keep"``)."""
    run = await create_run(request, str(uuid4()), body)
    headers = {"Location": f"/runs/{run.run_id}/stream", "Content-Location": f"/runs/{run.run_id}"}
    return stream_response(request, run, body.on_disconnect == "cancel", headers)


@router.post("/threads/{thread_id}/runs", summary="Start a run on the thread in the background")
async def start_run(thread_id: ThreadId, body: ThreadRunBody, request: Request) -> ApiJSON:
    """The run's record, at once (``pending``); join it, stream it or read it by its id."""
    run = await create_run(request, thread_id, body)
    return ApiJSON(run.to_json(), headers={"Content-Location": f"/threads/{thread_id}/runs/{run.run_id}"})


@router.post("/threads/{thread_id}/runs/wait", summary="Start a run on the thread and wait for its values")
async def wait_run(thread_id: ThreadId, body: ThreadRunBody, request: Request) -> StreamingResponse:
    """The thread's values once the run ends (``__error__`` if it failed, ``__interrupt__`` if it waits)."""
    run = await create_run(request, thread_id, body, wait=True)
    return waiting_response(request, run, body.on_disconnect == "cancel", stateful=True)


@router.post("/runs/wait", summary="Start a run on a new thread and wait for its values")
async def wait_stateless_run(body: StatelessRunBody, request: Request) -> StreamingResponse:
    """``/runs/stream``'s run, answered as ``/threads/{id}/runs/wait`` answers."""
    run = await create_run(request, str(uuid4()), body, wait=True)
    return waiting_response(request, run, body.on_disconnect == "cancel", stateful=False)


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
    lost = (lambda: cancel_soon(runs, run_id)) if cancel_on_disconnect else None
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
) -> EventSourceResponse:
    """The run's frames from its start, or after ``Last-Event-ID``, then live until it ends;
    ``stream_mode`` (one mode, or a JSON list) keeps only those modes' frames."""
    runs = runs_of(request)
    modes = join_modes(stream_mode)
    after = cursor_of(last_event_id)
    headers = stream_headers(thread_id, run_id)
    if await runs.events.thread_of(run_id) != thread_id:
        missing = ServerSentEvent(data=json.dumps(RUN_NOT_FOUND), event="error")
        return EventSourceResponse(single(missing), headers=headers)
    run = records_of(request).get(run_id)
    resumable = run.kwargs["resumable"] if run is not None else True
    lost = (lambda: cancel_soon(runs, run_id)) if cancel_on_disconnect else None
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
    thread's values once the run has ended, wherever it ran. A run that ended: 404."""
    if action == "rollback":
        invalid(("query", "action"), NO_ROLLBACK)
    runs = runs_of(request)
    if await runs.events.thread_of(run_id) != thread_id:
        raise HTTPException(404, "No runs found to cancel.")
    if await runs.events.ended(run_id):
        raise HTTPException(
            404,
            "No matching runs to cancel. Please verify the thread ID and run IDs are correct, "
            "and the runs haven't been deleted or completed.",
        )
    await cancel(runs, run_id)
    if not wait:
        return Response(status_code=202)
    result = outcome(runs, request.app.state.runner.graph, thread_id, run_id)
    return StreamingResponse(waiting(result), media_type="application/json", headers=join_headers(thread_id, run_id))


async def create_run(
    request: Request, thread_id: str, body: ThreadRunBody | StatelessRunBody, *, wait: bool = False
) -> RunRecord:
    """Check the body, make the thread ready (as ``multitask_strategy`` says) and start the run.

    The order is ``langgraph dev``'s: a bad body (422) before an unknown thread (404) before a
    busy one (409)."""
    stateful = isinstance(body, ThreadRunBody)
    known_assistant(body.assistant_id)
    graph, runs, records = request.app.state.runner.graph, runs_of(request), records_of(request)
    input = graph_input(body, request, stateful)
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
        await runs.start(thread_id, input, config, record=recorder(records, run_id, frames), run_id=run_id,
                         **stream_kwargs)
    except BaseException:
        records.discard(run_id)
        raise
    if temporary:
        keep_task(run_id, delete_when_ended(runs, records, graph, run_id, thread_id))
    return run


def run_kwargs(body: RunBody, config: dict[str, Any], temporary: bool) -> dict[str, Any]:
    """The run's body as LangGraph Server keeps it in the run's record (``Run.kwargs``)."""
    return {
        "input": body.input,
        "command": body.command.model_dump() if body.command else None,
        "config": config,
        "context": body.context or {},
        "stream_mode": body.modes(),
        "interrupt_before": None,
        "interrupt_after": None,
        "webhook": None,
        "feedback_keys": None,
        "temporary": temporary,
        "subgraphs": body.stream_subgraphs,
        "resumable": body.stream_resumable,
        "checkpoint_during": body.checkpoint_during if body.checkpoint_during is not None else True,
        "durability": durability_of(body),
    }


def known_assistant(assistant_id: str) -> None:
    """The agent's graph id or assistant id pass; ``langgraph dev`` answers 422 for a name that
    is not a UUID and 404 for another UUID."""
    if assistant_id in (GRAPH_ID, ASSISTANT_ID):
        return
    try:
        UUID(assistant_id)
    except ValueError:
        invalid(("body", "assistant_id"), f"not an assistant here: give an assistant UUID or the graph id {GRAPH_ID!r}")
    raise HTTPException(404, NOT_FOUND)


def graph_input(body: RunBody, request: Request, stateful: bool) -> Any:
    """What the graph is given: the input, a ``Command``, or ``None`` (go on from the checkpoint)."""
    settings = request.app.state.settings
    if body.context and set(body.config.configurable) - SERVER_KEYS:
        raise HTTPException(400, BOTH_CONTEXTS)
    if body.input is not None and body.command is not None:
        invalid(("body", "command"), "give input or command, not both")
    if body.command is None:
        if body.input is not None:
            check_state(body.input, settings, ("body", "input"))
        return body.input
    command = body.command
    if command.resume is not None and not stateful:
        raise HTTPException(400, "You must provide a thread_id when resuming.")
    if command.update is not None:
        check_state(command.update, settings, ("body", "command", "update"))
    goto = [command.goto] if isinstance(command.goto, str) else command.goto or []
    nodes = [n for n in request.app.state.runner.graph.nodes if not n.startswith("__")]
    if unknown := [g for g in goto if g not in nodes]:
        invalid(("body", "command", "goto"), f"{unknown[0]!r} is not a node of the agent ({', '.join(nodes)})")
    return Command(resume=command.resume, update=command.update, goto=goto)


def check_state(values: dict[str, Any], settings: Any, loc: tuple[str, ...]) -> None:
    """A 422 for a key the agent's input does not have, or messages LangChain cannot read, or
    a message past ``AGENT_MAX_INPUT_CHARS`` or not Unicode text."""
    if unknown := [k for k in values if k not in INPUT_KEYS]:
        invalid((*loc, unknown[0]), f"the agent's input has only {', '.join(INPUT_KEYS)}")
    if "messages" not in values:
        return
    given = values["messages"]
    try:
        messages = convert_to_messages(given if isinstance(given, list) else [given])
    except (ValueError, TypeError, KeyError, NotImplementedError) as e:
        invalid((*loc, "messages"), f"not messages LangChain reads ({type(e).__name__})")
    for i, message in enumerate(messages):
        text = message.text
        if len(text) > settings.max_input_chars:
            invalid(
                (*loc, "messages", i),
                f"the message is {len(text):,} characters long; the limit is "
                f"{settings.max_input_chars:,} (AGENT_MAX_INPUT_CHARS)",
                "string_too_long",
            )
        if why := not_text(text):
            invalid((*loc, "messages", i), f"the message's {why}", "string_unicode")


def checkpoint_of(body: ThreadRunBody, thread_id: str) -> str | None:
    """The checkpoint to run from (``checkpoint_id``, ``checkpoint`` or ``config.configurable``),
    if any; a 422 when they disagree or name another thread or a subgraph's checkpoint."""
    configurable = body.config.configurable
    check_configurable(configurable, thread_id)
    places: list[tuple[tuple[str, ...], str | None]] = [
        (("body", "checkpoint_id"), body.checkpoint_id),
        (("body", "config", "configurable", "checkpoint_id"), configurable.get("checkpoint_id")),
    ]
    if (checkpoint := body.checkpoint) is not None:
        check_target(checkpoint.configurable(), thread_id, ("body", "checkpoint"))
        places.append((("body", "checkpoint", "checkpoint_id"), checkpoint.checkpoint_id))
    given = [(loc, c) for loc, c in places if c is not None]
    if len({c for _, c in given}) > 1:
        invalid(given[1][0], "names another checkpoint than the body's other checkpoint fields")
    return given[0][1] if given else None


def no_checkpoint(body: RunBody) -> None:
    """A stateless run has a new thread: nothing in ``configurable`` may address another."""
    check_configurable(body.config.configurable, None)
    if body.config.configurable.get("checkpoint_id") is not None:
        invalid(("body", "config", "configurable", "checkpoint_id"), "a stateless run's thread has no checkpoints")


def check_configurable(configurable: dict[str, Any], thread_id: str | None) -> None:
    """``configurable`` reaches the graph as given, but for what the server decides itself."""
    loc = ("body", "config", "configurable")
    if internal := [k for k in configurable if k.startswith("__")]:
        invalid((*loc, internal[0]), "LangGraph's internal keys (starting with '__') are not accepted")
    check_target(configurable, thread_id, loc)


def check_target(target: dict[str, Any], thread_id: str | None, loc: tuple[str, ...]) -> None:
    """A checkpoint address may name the run's own thread, and its root namespace only."""
    if target.get("thread_id") not in (None, thread_id):
        invalid((*loc, "thread_id"), "names another thread than the run's")
    if target.get("checkpoint_ns") not in (None, ""):
        invalid((*loc, "checkpoint_ns"), "runs start from the graph's own checkpoints (namespace ''), not a subgraph's")
    if target.get("checkpoint_map"):
        invalid((*loc, "checkpoint_map"), "runs start from the graph's own checkpoints, not a subgraph's")


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
    the thread's runs first, ``enqueue`` lets the run wait its turn (the runner's queue). New
    input on a thread waiting for approval is refused (409) unless a run is ahead of it (that
    run's end decides)."""
    runner, runs = request.app.state.runner, runs_of(request)
    ahead = records_of(request).active(thread_id)
    if strategy == "reject" and (ahead or runner.busy(thread_id)):
        raise HTTPException(409, BUSY)
    if strategy == "interrupt":
        for run in ahead:
            await cancel(runs, run.run_id)
    if is_new_input(input) and not runner.busy(thread_id):
        await runner.ready(thread_id)


def run_config(
    config: RunConfigBody, checkpoint_id: str | None, metadata: dict[str, Any], run_id: str, thread_id: str
) -> dict[str, Any]:
    """The run's LangGraph config, as ``langgraph_api`` makes it: the run, thread, graph,
    assistant and user (``""``: no signed-in users here) in ``configurable``; in ``metadata``
    the run's metadata, every plain ``configurable`` value (``langgraph_api.utils.config.
    ensure_config``), the attempt and the LangGraph version (``langgraph_api.stream``), so
    LangGraph passes them on to messages, tasks and checkpoints. The run's and thread's ids
    there are always the server's: a join finds the run's checkpoints by them."""
    ids = {"run_id": run_id, "thread_id": thread_id}
    configurable = {k: v for k, v in config.configurable.items() if k not in SERVER_KEYS}
    configurable |= {**ids, "graph_id": GRAPH_ID, "assistant_id": ASSISTANT_ID, "user_id": configurable.get("user_id") or ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    plain = {k: v for k, v in configurable.items()
             if not k.startswith("__") and isinstance(v, str | int | float | bool)}
    run_metadata = {**plain, **metadata, **ids, "run_attempt": 1, "langgraph_version": langgraph.version.__version__}
    out: dict[str, Any] = {"configurable": configurable, "metadata": run_metadata}
    if config.tags:
        out["tags"] = config.tags
    for key in ("recursion_limit", "max_concurrency"):
        if (value := getattr(config, key)) is not None:
            out[key] = value
    return out


def durability_of(body: RunBody) -> str:
    """``durability``, or what the deprecated ``checkpoint_during`` means; unset, ``"sync"``:
    the service stores each step before its tools start (``agent_ng.graph.events.stream``)."""
    if body.durability is not None:
        return body.durability
    if body.checkpoint_during is not None:
        return "async" if body.checkpoint_during else "exit"
    return "sync"


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


async def delete_when_ended(runs: BackgroundRuns, records: RunRecords, graph: Any, run_id: str, thread_id: str) -> None:
    """Delete a stateless run's thread (checkpoints and record) once its run has ended."""
    try:
        async with aclosing(runs.events.read(run_id)) as entries:
            async for _ in entries:
                pass
        await saver_of(graph).adelete_thread(thread_id)
        records.forget_thread(thread_id)
    except Exception as e:
        log.warning("stateless run %s: its thread %s was not deleted: %s", run_id, thread_id, e)


async def cancel(runs: BackgroundRuns, run_id: str) -> None:
    """Cancel the run: here, waiting until it has stopped; on another replica, by asking it."""
    if not await runs.cancel(run_id) and not await runs.events.ended(run_id):
        await runs.events.ask_cancel(run_id)


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


def stream_response(request: Request, run: RunRecord, cancel_on_disconnect: bool, headers: dict[str, str]) -> EventSourceResponse:
    """A new run's stream, from its first frame."""
    runs = runs_of(request)
    lost = (lambda: cancel_soon(runs, run.run_id)) if cancel_on_disconnect else None
    events = sse_frames(runs, run.run_id, None, run.kwargs["resumable"], on_lost=lost,
                        before_end=_tasks.get(run.run_id))
    return sse_response(request, events, headers)


def sse_response(request: Request, events: AsyncIterator[ServerSentEvent], headers: dict[str, str]) -> EventSourceResponse:
    """``events`` as ``text/event-stream``, with ``langgraph_api``'s ``: heartbeat`` comments."""
    return EventSourceResponse(
        events,
        headers=headers,
        ping=min(HEARTBEAT_S, request.app.state.settings.sse_ping_s),
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
    )


async def sse_frames(
    runs: BackgroundRuns,
    run_id: str,
    after: str | None,
    resumable: bool,
    *,
    modes: list[str] | None = None,
    on_lost: Callable[[], None] | None = None,
    before_end: asyncio.Task[None] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The run's frames from its log as SSE events, to its ``run_end``; ``on_lost`` runs when
    the client goes before that; ``before_end`` (a stateless run's thread deletion) is waited
    for before the stream closes. A log that fails mid-stream ends it with an ``error`` frame."""
    ended = False
    entries = runs.events.read(run_id, after)
    try:
        async for cursor, entry in entries:
            sse = Frames.sse(cursor, entry, resumable)
            if sse is None:
                break
            event, data, id = sse
            if modes is None or event == "error" or mode_matches(event, modes):
                yield ServerSentEvent(data=data, event=event, id=id)
        ended = True
        if before_end is not None:
            await asyncio.shield(before_end)
    except Exception as e:
        ended = True
        log.warning("stream of run %s ended: its event log failed: %s", run_id, e)
        yield ServerSentEvent(data=dumps({"error": type(e).__name__, "message": str(e)}).decode(), event="error")
    finally:
        await entries.aclose()
        if not ended and on_lost is not None:
            on_lost()


def mode_matches(event: str, modes: list[str]) -> bool:
    """Whether a frame is of one of ``modes`` (``langgraph_runtime_inmem``'s join filter)."""
    if event in modes:
        return True
    if event.startswith("messages") and ("messages" in modes or "messages-tuple" in modes):
        return True
    return event.partition("|")[0] in modes


async def single(event: ServerSentEvent) -> AsyncIterator[ServerSentEvent]:
    """A stream of one event."""
    yield event


def waiting_response(request: Request, run: RunRecord, cancel_on_disconnect: bool, *, stateful: bool) -> StreamingResponse:
    """A wait's answer: the run's final values once it ended, newlines meanwhile."""
    runs, graph = runs_of(request), request.app.state.runner.graph
    lost = (lambda: cancel_soon(runs, run.run_id)) if cancel_on_disconnect else None
    result = outcome(runs, graph, run.thread_id, run.run_id, stateful=stateful)
    return StreamingResponse(waiting(result, lost), media_type="application/json",
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


async def thread_known(request: Request, thread_id: str) -> None:
    """404 as ``langgraph dev`` words it, unless the thread exists (a record or checkpoints)."""
    if not await thread_exists(request.app.state.runner.graph, thread_id):
        raise HTTPException(404, f"Thread with ID {thread_id} not found")


def stream_headers(thread_id: str, run_id: str) -> dict[str, str]:
    """Where a run's stream is joined again (``Location``) and where the run is read."""
    return {"Location": f"/threads/{thread_id}/runs/{run_id}/stream",
            "Content-Location": f"/threads/{thread_id}/runs/{run_id}"}


def join_headers(thread_id: str, run_id: str) -> dict[str, str]:
    """Where a wait is taken up again (``Location``: the join) and where the run is read."""
    return {"Location": f"/threads/{thread_id}/runs/{run_id}/join",
            "Content-Location": f"/threads/{thread_id}/runs/{run_id}"}


def runs_of(request: Request) -> BackgroundRuns:
    """The service's background runs (and through them, the event log)."""
    return request.app.state.runs


def records_of(request: Request) -> RunRecords:
    """This process's records of the API's runs."""
    return request.app.state.run_records
