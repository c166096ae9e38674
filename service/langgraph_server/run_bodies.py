"""What a LangGraph Server API run body may hold, and how it is checked before a run starts.

``runs`` takes a body as one of these models (FastAPI's 422 for what they refuse), then checks
what a model cannot alone, in ``langgraph dev``'s order (a bad body before an unknown thread)::

    known_assistant(body.assistant_id)
    input = graph_input(body, request, stateful)   # the input, a Command, or None
    checkpoint_id = checkpoint_of(body, thread_id) if stateful else no_checkpoint(body)
    config = run_config(body.config, checkpoint_id, metadata, run_id, thread_id)

Where this server differs, it says so with a 422 rather than ignore a request: an unknown body
field or stream mode, both ``input`` and ``command`` (``langgraph dev`` drops the input),
``interrupt_before`` / ``interrupt_after``, webhooks, ``after_seconds``, input keys other than
``messages``, LangGraph's internal configurable keys. ``durability`` defaults to
``"sync"`` (each step stored before its tools start), not ``"async"``.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

import langgraph.version
from fastapi import HTTPException, Request
from langchain_core.messages import convert_to_messages
from langgraph.types import Command
from pydantic import Field

from agent_ng.service.inputs import invalid, not_text
from agent_ng.service.langgraph_server.assistants import ASSISTANT_ID, GRAPH_ID
from agent_ng.service.langgraph_server.frames import STREAM_MODES
from agent_ng.service.langgraph_server.schemas import Body, CheckpointConfig

NOT_FOUND = "Thread or assistant not found."
BOTH_CONTEXTS = (
    "Cannot specify both configurable and context. Prefer setting context alone. Context was "
    "introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable."
)
SERVER_KEYS = frozenset({"thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map"})
"""``configurable`` keys that address the run's checkpoint rather than configure the graph."""
INPUT_KEYS = ("messages",)
"""The agent's input: its conversation (the rest of its state is its own)."""

StreamMode = Literal[STREAM_MODES]


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


class StatelessRunBody(RunBody):
    """A run on a new thread of its own, deleted after it unless ``on_completion`` keeps it.

    ``if_not_exists`` is taken for what it is there, the new thread being made (``RemoteGraph``
    sends ``"create"`` whether it has a thread or not)."""

    on_completion: Literal["delete", "keep"] = "delete"
    if_not_exists: Literal["create", "reject"] | None = None


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


def durability_of(body: RunBody) -> str:
    """``durability``, or what the deprecated ``checkpoint_during`` means; unset, ``"sync"``:
    the service stores each step before its tools start (``agent_ng.graph.events.stream``)."""
    if body.durability is not None:
        return body.durability
    if body.checkpoint_during is not None:
        return "async" if body.checkpoint_during else "exit"
    return "sync"
