"""The LangGraph Server API's wire format: request bodies as ``langgraph_api`` reads them, its
JSON encoding of what we answer, and the filters (``contains``, ``selected``) its searches apply.

Bodies follow ``langgraph_api``'s OpenAPI schemas (``ThreadCreate``, ``ThreadSearchRequest``,
...) with one difference: a field we do not support (``ttl``, ``supersteps``, ``extract``) or do
not know is a 422 naming it (``extra="forbid"``), where LangGraph Server ignores an unknown one.
Answers are encoded as ``langgraph_api.serde`` does: a pydantic object (a message) as its
``model_dump()``, a tuple as a list, an exception as ``{"error", "message"}``.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_ng.persistence.thread_records import NAMESPACE as RECORDS_NAMESPACE
from agent_ng.service.event_log import event_json
from agent_ng.service.inputs import ThreadId

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
ThreadField = Literal[
    "thread_id", "created_at", "updated_at", "state_updated_at", "metadata", "config", "status", "values", "interrupts"
]
StateField = Literal[
    "values", "next", "tasks", "checkpoint", "metadata", "created_at", "parent_checkpoint", "interrupts"
]
AssistantField = Literal[
    "assistant_id", "graph_id", "name", "description", "config", "context", "created_at", "updated_at", "metadata",
    "version",
]


class Body(BaseModel):
    """A request body: a field it does not declare is a 422 naming it."""

    model_config = ConfigDict(extra="forbid")


class CheckpointConfig(Body):
    """A checkpoint as clients address it (``checkpoint`` of a ``ThreadState``)."""

    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None

    @field_validator("checkpoint_ns")
    @classmethod
    def not_the_records(cls, namespace: str | None) -> str | None:
        """Thread records keep a namespace of their own: no client reads or writes it as a state."""
        if namespace == RECORDS_NAMESPACE:
            raise ValueError("the namespace of thread records, not a graph's")
        return namespace

    def configurable(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ThreadCreate(Body):
    """``POST /threads``: a new thread, under the id given or a new one."""

    thread_id: ThreadId | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] | None = None


class ThreadPatch(Body):
    """``PATCH /threads/{id}``: metadata merged key by key into the thread's."""

    metadata: dict[str, Any] | None = None


class ThreadSearch(Body):
    """``POST /threads/search``."""

    ids: list[ThreadId] | None = None
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    status: ThreadStatus | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[ThreadField] | None = None


class StateAtCheckpoint(Body):
    """``POST /threads/{id}/state/checkpoint``: the state at one checkpoint."""

    checkpoint: CheckpointConfig
    subgraphs: bool = False
    select: list[StateField | str] | None = None


class StateUpdate(Body):
    """``POST /threads/{id}/state``: values written as if ``as_node`` had returned them."""

    values: dict[str, Any] | list[Any] | None = None
    checkpoint: CheckpointConfig | None = None
    checkpoint_id: str | None = None
    as_node: str | None = None


class HistorySearch(Body):
    """``POST /threads/{id}/history``: checkpoints, newest first."""

    limit: int = Field(1, ge=1, le=1000)
    before: str | CheckpointConfig | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointConfig | None = None
    select: list[StateField | str] | None = None


class AssistantSearch(Body):
    """``POST /assistants/search``."""

    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: Literal["assistant_id", "created_at", "updated_at", "name", "graph_id"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[AssistantField] | None = None


def dumps(content: Any) -> bytes:
    """``content`` as LangGraph Server's JSON: the event log's one encoder (``event_json``)."""
    return event_json(content).encode()


def jsonable(content: Any) -> Any:
    """``content`` as plain JSON values (dicts, lists, strings, numbers), as a client reads it."""
    return orjson.loads(dumps(content))


class ApiJSON(Response):
    """A JSON answer encoded by ``dumps``."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def contains(document: Any, query: Any) -> bool:
    """PostgreSQL's ``jsonb @>``, which LangGraph Server's metadata and values filters use: every
    key of a query object is in the document with a contained value, every item of a query list
    is contained in some item of the document's, scalars are equal."""
    if isinstance(query, dict):
        return isinstance(document, dict) and all(k in document and contains(document[k], v) for k, v in query.items())
    if isinstance(query, list):
        return isinstance(document, list) and all(any(contains(d, q) for d in document) for q in query)
    if isinstance(document, bool) or isinstance(query, bool):
        return document is query
    return document == query


def selected(item: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """``item`` with only the ``select`` fields (all when ``select`` is empty); ``values.<key>``
    keeps one key of a state's values."""
    if not select:
        return item
    keys = {"values" if s.startswith("values.") else s for s in select}
    out = {k: v for k, v in item.items() if k in keys}
    value_keys = {s.removeprefix("values.") for s in select if s.startswith("values.")}
    if value_keys and "values" not in select and isinstance(out.get("values"), dict):
        out["values"] = {k: v for k, v in out["values"].items() if k in value_keys}
    return out


def checkpoint_json(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """``langgraph_api.state.runnable_config_to_checkpoint``: the checkpoint a config points at."""
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("thread_id") or not configurable.get("checkpoint_id"):
        return None
    checkpoint = {"checkpoint_id": configurable["checkpoint_id"], "thread_id": configurable["thread_id"]}
    if "checkpoint_ns" in configurable:
        checkpoint["checkpoint_ns"] = configurable["checkpoint_ns"] or ""
    if "checkpoint_map" in configurable:
        checkpoint["checkpoint_map"] = configurable["checkpoint_map"]
    return checkpoint
