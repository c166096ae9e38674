"""The one assistant: the agent, under its graph id ``agent`` and a stable assistant id; and
``/info``, what this server is.

LangGraph Server makes a "system" assistant for each graph it serves; this is that assistant for
the agent, read-only (no create, patch or versions): ``langgraph_sdk``'s ``assistants.search``,
``get``, ``get_graph``, ``get_schemas`` and ``get_subgraphs`` answer as ``langgraph dev`` does.
Where ``langgraph dev`` wants a UUID, the graph id ``agent`` is accepted as well.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

import langgraph.version
from fastapi import APIRouter, HTTPException, Query, Request
from langchain_core.runnables.utils import create_model
from langgraph.pregel import Pregel
from pydantic import TypeAdapter

from agent_ng.service.langgraph_server.schemas import ApiJSON, AssistantSearch, contains, selected

GRAPH_ID = "agent"
NAMESPACE_GRAPH = UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
"""LangGraph Server's namespace for a graph's default assistant id (``langgraph_api.graph``),
so the agent's assistant id here is the one ``langgraph dev`` gives it."""
ASSISTANT_ID = str(uuid5(NAMESPACE_GRAPH, GRAPH_ID))
API_VERSION = "0.16.7"
"""The ``langgraph_api`` version whose routes and answers this server follows."""
REGISTERED_AT = datetime.now(UTC)
"""The assistant's ``created_at``: when this process registered the graph, as LangGraph Server's is."""
EXCLUDED_CONFIG_SCHEMA = ("__pregel_checkpointer", "__pregel_store", "checkpoint_id", "checkpoint_ns", "thread_id")

router = APIRouter()


def assistant_of(assistant_id: str) -> str:
    """The assistant id of ``assistant_id`` (the graph id or the id itself); 404 for any other."""
    if assistant_id not in (GRAPH_ID, ASSISTANT_ID):
        raise HTTPException(404, f"Assistant '{assistant_id}' not found")
    return ASSISTANT_ID


def known(assistant_id: str) -> None:
    """Nothing for the agent's ids; otherwise LangGraph Server's answer to an id it does not
    hold: 422 for one that is not a UUID, 404 for any other."""
    if assistant_id in (GRAPH_ID, ASSISTANT_ID):
        return
    try:
        UUID(assistant_id)
    except ValueError:
        raise HTTPException(422, "Invalid assistant ID: must be a UUID") from None
    raise HTTPException(404, "Not Found")


def assistant(graph: Pregel) -> dict[str, Any]:
    """The agent as LangGraph Server shows the assistant it made for a graph."""
    name = graph.name if graph.name and graph.name != "LangGraph" else GRAPH_ID
    return {
        "assistant_id": ASSISTANT_ID,
        "graph_id": GRAPH_ID,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "name": name,
        "created_at": REGISTERED_AT,
        "updated_at": REGISTERED_AT,
        "version": 1,
        "description": None,
    }


@router.get("/info", summary="What this server is and which LangGraph Server features it has")
async def info() -> ApiJSON:
    """``langgraph dev``'s ``/info``, with flags for what this server has: no crons, no LangSmith."""
    return ApiJSON(
        {
            "version": API_VERSION,
            "langgraph_py_version": langgraph.version.__version__,
            "flags": {
                "assistants": True,
                "crons": False,
                "langsmith": False,
                "langsmith_tracing_replicas": False,
                "langsmith_tracing_session_on_runs": False,
            },
            "host": {
                "kind": "self-hosted",
                "project_id": None,
                "host_revision_id": None,
                "revision_id": None,
                "tenant_id": None,
            },
        }
    )


@router.post("/assistants/search", summary="Assistants: the agent, if it matches")
async def search_assistants(body: AssistantSearch, request: Request) -> ApiJSON:
    """The agent when it matches the filters, in LangGraph Server's list with its pagination headers."""
    if body.graph_id is not None and body.graph_id != GRAPH_ID:
        raise HTTPException(404, f"Graph '{body.graph_id}' not found. Expected one of: {[GRAPH_ID]}")
    agent = assistant(request.app.state.runner.graph)
    matches = [
        agent
        for agent in [agent]
        if (not body.name or body.name.lower() in agent["name"].lower())
        and (not body.metadata or contains(agent["metadata"], body.metadata))
    ]
    page = matches[body.offset : body.offset + body.limit]
    more = len(matches) > body.offset + body.limit
    headers = (
        {"X-Pagination-Total": str(body.offset + body.limit + 1), "X-Pagination-Next": str(body.offset + body.limit)}
        if more
        else {"X-Pagination-Total": str(len(page) + body.offset)}
    )
    return ApiJSON([selected(a, body.select) for a in page], headers=headers)


@router.get("/assistants/{assistant_id}", summary="The assistant")
async def get_assistant(assistant_id: str, request: Request) -> ApiJSON:
    """The agent's assistant, by its id or its graph id."""
    known(assistant_id)
    return ApiJSON(assistant(request.app.state.runner.graph))


@router.get("/assistants/{assistant_id}/graph", summary="The assistant's graph, drawn")
async def get_assistant_graph(
    assistant_id: str, request: Request, xray: str | None = Query(None)
) -> ApiJSON:
    """The graph's nodes and edges (``get_graph(xray=...).to_json()``), as LangGraph Studio draws it."""
    known(assistant_id)
    drawing = (await request.app.state.runner.graph.aget_graph(xray=xray_of(xray))).to_json()
    for node in drawing.get("nodes", []):
        if isinstance(data := node.get("data"), dict):
            data.pop("id", None)
    return ApiJSON(drawing)


@router.get("/assistants/{assistant_id}/schemas", summary="The assistant's input, output, state and config schemas")
async def get_assistant_schemas(assistant_id: str, request: Request) -> ApiJSON:
    """The graph's schemas, which LangGraph Studio builds its input form from."""
    known(assistant_id)
    return ApiJSON({"graph_id": GRAPH_ID, **graph_schemas(request.app.state.runner.graph)})


@router.get("/assistants/{assistant_id}/subgraphs", summary="The assistant's subgraphs and their schemas")
@router.get("/assistants/{assistant_id}/subgraphs/{namespace}", summary="The subgraphs under one namespace")
async def get_assistant_subgraphs(
    assistant_id: str, request: Request, namespace: str | None = None, recurse: str = Query("False")
) -> ApiJSON:
    """Each subgraph's schemas by namespace (``recurse``: subgraphs of subgraphs too)."""
    known(assistant_id)
    graph = request.app.state.runner.graph
    subgraphs = graph.aget_subgraphs(namespace=namespace, recurse=recurse in ("true", "True"))
    return ApiJSON({ns: graph_schemas(subgraph) async for ns, subgraph in subgraphs})


def xray_of(text: str | None) -> bool | int:
    """The ``xray`` query as LangGraph Server reads it: true, false, or a depth above 0; 422 otherwise."""
    if not text or text in ("false", "False"):
        return False
    if text in ("true", "True"):
        return True
    try:
        depth = int(text)
    except ValueError:
        depth = 0
    if depth <= 0:
        raise HTTPException(422, "Invalid xray value")
    return depth


def graph_schemas(graph: Pregel) -> dict[str, Any]:
    """A graph's JSON schemas, made as ``langgraph_api.api.assistants._graph_schemas`` makes them;
    a schema that cannot be made is None."""
    makers = {
        "input_schema": graph.get_input_jsonschema,
        "output_schema": graph.get_output_jsonschema,
        "state_schema": lambda: state_schema(graph),
        "config_schema": lambda: config_schema(graph),
        "context_schema": graph.get_context_jsonschema,
    }
    schemas = {}
    for key, make in makers.items():
        try:
            schemas[key] = make()
        except Exception:
            schemas[key] = None
    return schemas


def state_schema(graph: Pregel) -> dict[str, Any]:
    """The state's schema: each output channel's update type, or ``Any`` for one without a schema."""
    fields: dict[str, Any] = {}
    for key in graph.stream_channels_list:
        channel = graph.channels[key]
        try:
            create_model(key, __root__=(channel.UpdateType, None)).model_json_schema()
            fields[key] = (channel.UpdateType, None)
        except Exception:
            fields[key] = (Any, None)
    return create_model(graph.get_name("State"), **fields).model_json_schema()


def config_schema(graph: Pregel) -> dict[str, Any]:
    """The ``configurable`` part of the graph's config schema, without LangGraph's own keys."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = graph.config_schema()
    fields = getattr(schema, "model_fields", None) or {}
    if "configurable" not in fields:
        return {}
    json_schema = TypeAdapter(fields["configurable"].annotation).json_schema()
    for key in EXCLUDED_CONFIG_SCHEMA:
        json_schema.get("properties", {}).pop(key, None)
    if getattr(graph, "config_type", None) is not None and hasattr(graph.config_type, "__name__"):
        json_schema["title"] = graph.config_type.__name__
    return json_schema
