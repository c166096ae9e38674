"""Tracing from settings alone: ``agent-ng ask`` in a fresh process with ``AGENT_TRACING=otlp``.

The run is real end to end: ``ChatOpenAI`` against the scripted OpenAI server, three calls of
the test MCP server's ``gather`` tool in one step (each returns only once all three are inside
the server, so they overlap by construction, not by timing), spans exported by the real OTLP
exporter when the process exits. The receiver is an in-process OTLP/HTTP collector, and, when
it can run here, a real Phoenix server queried through Phoenix's own client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from tests.helpers.openai_server import Reply, ScriptedOpenAI, running_server
from tests.helpers.paths import MCP_SERVER, REPO
from tests.helpers.ports import free_port

ROOT = REPO
SERVER = MCP_SERVER
PHOENIX = os.environ.get("AGENT_TEST_PHOENIX")
"""A ``phoenix`` executable from its own Python >= 3.12 environment (see the skip reason)."""


@dataclass(frozen=True, slots=True)
class Span:
    name: str
    span_id: str
    parent_id: str | None
    trace_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]


def traced_ask(tmp_path: Path, endpoint: str) -> list[str]:
    """Run ``agent-ng ask`` with tracing to ``endpoint``; return the three tool call ids."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"t": {"command": sys.executable, "args": [SERVER]}}}))
    gather = [("gather", {"label": label, "group": "g", "parties": 3}) for label in "ABC"]
    script = ScriptedOpenAI([Reply(tool_calls=gather), Reply(text="All three are done.")])
    with running_server(script) as base_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_", "OTEL_", "LANGSMITH_"))}
        env |= {
            "AGENT_DATA_DIR": str(tmp_path),
            "AGENT_MCP_CONFIG": str(config),
            "AGENT_TRACING": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OPENAI_BASE_URL": base_url,
            "AGENT_MODEL": "test-model",
        }
        done = subprocess.run(
            [sys.executable, "-m", "agent_ng.cli.main", "ask", "run three"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert "All three are done." in done.stdout
    call_ids = [c["id"] for c in script.requests[1]["messages"][-4]["tool_calls"]]
    assert len(call_ids) == 3
    return call_ids


def check_trace(spans: list[Span], call_ids: list[str]) -> None:
    """One trace: the graph at the root, the model calls and three overlapping tool spans."""
    assert len({s.trace_id for s in spans}) == 1, "one run is one trace"
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.name == "agent-ng"

    models = [s for s in spans if s.attributes.get("openinference.span.kind") == "LLM"]
    assert len(models) == 2
    for model in models:
        assert model.attributes["llm.model_name"] == "test-model"
        assert model.attributes["llm.token_count.total"] > 0

    tools = [s for s in spans if s.attributes.get("openinference.span.kind") == "TOOL"]
    assert sorted(s.attributes["tool_call.id"] for s in tools) == sorted(call_ids)
    for tool in tools:
        assert tool.name == "gather"
        assert tool.attributes["agent_ng.tool.status"] == "success"
        assert tool.attributes["agent_ng.tool.cached"] is False
        assert by_id[tool.parent_id].name == "tools" and by_id[tool.parent_id].parent_id == root.span_id
    assert max(t.start_ns for t in tools) < min(t.end_ns for t in tools), "the three tool spans overlap"


def otlp_collector(received: list[Any]) -> FastAPI:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    app = FastAPI()

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        received.append(ExportTraceServiceRequest.FromString(await request.body()))
        return Response(b"", media_type="application/x-protobuf")

    return app


def spans_from_otlp(requests: list[Any]) -> list[Span]:
    from google.protobuf.json_format import MessageToDict

    spans = []
    for request in requests:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {
                        a.key: MessageToDict(a.value).popitem()[1] for a in span.attributes
                    }
                    attributes = {k: int(v) if k.startswith("llm.token_count") else v for k, v in attributes.items()}
                    spans.append(
                        Span(span.name, span.span_id.hex(), span.parent_span_id.hex() or None, span.trace_id.hex(),
                             span.start_time_unix_nano, span.end_time_unix_nano, attributes)
                    )
    return spans


def test_a_traced_run_reaches_an_otlp_collector_as_one_trace(tmp_path):
    received: list[Any] = []
    with running_server(otlp_collector(received)) as base_url:
        call_ids = traced_ask(tmp_path, base_url.removesuffix("/v1"))
    check_trace(spans_from_otlp(received), call_ids)


@pytest.fixture
def phoenix_url(tmp_path) -> Iterator[str]:
    http_port, grpc_port = free_port(), free_port()
    env = os.environ | {
        "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"),
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_HOST": "127.0.0.1",
    }
    process = subprocess.Popen([PHOENIX, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError("phoenix serve exited")
            time.sleep(0.1)  # waiting for the Phoenix process to listen
        else:
            raise RuntimeError("phoenix serve did not become healthy")
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.needs("phoenix")
def test_a_traced_run_shows_in_phoenix_as_one_trace(tmp_path, phoenix_url):
    from phoenix.client import Client

    call_ids = traced_ask(tmp_path, phoenix_url)
    client = Client(base_url=phoenix_url)
    rows: list[dict[str, Any]] = []
    for _ in range(100):
        rows = client.spans.get_spans(project_identifier="default", limit=100)
        if len([r for r in rows if r["span_kind"] == "TOOL"]) == 3:
            break
        time.sleep(0.1)  # Phoenix stores received spans in the background
    spans = [
        Span(r["name"], r["context"]["span_id"], r.get("parent_id"), r["context"]["trace_id"],
             _ns(r["start_time"]), _ns(r["end_time"]), {**r["attributes"], "openinference.span.kind": r["span_kind"]})
        for r in rows
    ]
    check_trace(spans, call_ids)


def _ns(timestamp: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(timestamp).timestamp() * 1e9)
