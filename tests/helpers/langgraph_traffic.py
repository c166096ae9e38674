"""What a ``langgraph_sdk`` client gets from a LangGraph server, for the tests that hold
``agent-ng serve``'s ``/langgraph`` to ``langgraph dev``: one client script (``traffic``) that is
run against either server and records every response (status, headers, SSE events in order)
and every answer.

    with langgraph_dev(tmp_path, **DEV_ENV, AGENT_DATA_DIR=str(tmp_path)) as url:
        recorded = asyncio.run(traffic(url))

``python -m tests.helpers.langgraph_traffic OUT.json`` records ``langgraph dev``'s traffic to a
file, to look at what it sends.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk import get_client

from tests.helpers.langgraph_dev import langgraph_dev

RUN_GUARD_S = 30
PRIMES = "how many primes are below {below}?"
"""One tool with twenty progress reports: every stream mode has something to show, in one order
(each with its own bound: a result the engine has cached comes without progress)."""
ARITHMETIC = "what is 17*23?"
LONG = "how many primes are below 1000000000?"
"""Seconds of sieving (progress every 5%), so a run is still busy when the next request comes;
a cancelled call stops at its next report."""
STREAM_MODES = {
    "tuples": ["values", "updates", "messages-tuple", "custom"],
    "messages": ["messages"],
    "events": ["events"],
    "debug": ["debug"],
}
STRATEGIES = ("reject", "enqueue", "interrupt", "rollback")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


DEV_ENV = {"AGENT_CHECKPOINT_URL": "memory://", "AGENT_CACHE_URL": "memory://"}
"""What ``langgraph dev`` runs with here (and ``AGENT_DATA_DIR``, its scratch directory): the tool
engine's store in memory too, since a result cached by an earlier run comes without progress."""


def question(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


class Recorder:
    """A ``langgraph_sdk`` client whose every response is noted: method, path (ids as ``{id}``),
    status, content type, and whether it had ``Location`` and ``Content-Location``."""

    def __init__(self, url: str) -> None:
        self.client = get_client(url=url, api_key=None, timeout=RUN_GUARD_S)
        self.prefix = httpx.URL(url).path.rstrip("/")
        self.responses: list[dict[str, Any]] = []
        self.client.http.client.event_hooks["response"].append(self._note)

    async def _note(self, response: httpx.Response) -> None:
        path = response.request.url.path.removeprefix(self.prefix)
        self.responses.append({
            "request": f"{response.request.method} {UUID.sub('{id}', path)}",
            "status": response.status_code,
            "content_type": response.headers.get("content-type", "").partition(";")[0],
            "location": "location" in response.headers,
            "content_location": "content-location" in response.headers,
        })

    def take(self) -> list[dict[str, Any]]:
        taken, self.responses = self.responses, []
        return taken


async def refusal(call) -> dict[str, Any]:
    """The status a call got (200 when it returned) and the error's body, if it was refused."""
    try:
        await call
    except httpx.HTTPStatusError as error:
        return {"status": error.response.status_code, "detail": error.response.text[:500]}
    return {"status": 200, "detail": ""}


async def status_of(call) -> int:
    return (await refusal(call))["status"]


async def events(parts: AsyncIterator) -> list[dict[str, Any]]:
    async with asyncio.timeout(RUN_GUARD_S):
        return [{"event": p.event, "data": p.data, "id": p.id} async for p in parts]


async def streams(rec: Recorder) -> dict[str, Any]:
    """One run per set of stream modes, each on a new thread, of the primes question."""
    out = {}
    for n, (name, modes) in enumerate(STREAM_MODES.items()):
        thread = await rec.client.threads.create()
        recorded = await events(rec.client.runs.stream(
            thread["thread_id"], "agent", input=question(PRIMES.format(below=200_000 + n)), stream_mode=modes))
        out[name] = {"events": recorded, "responses": rec.take()}
    return out


async def threads(rec: Recorder) -> dict[str, Any]:
    """A thread's life as a client reads it: created, found, run, its state and its history."""
    c = rec.client.threads
    out: dict[str, Any] = {}
    created = await c.create(metadata={"owner": "differential"})
    tid = created["thread_id"]
    out["create"] = created
    out["create_if_exists"] = await c.create(thread_id=tid, if_exists="do_nothing")
    out["create_if_exists_raise"] = await status_of(c.create(thread_id=tid, if_exists="raise"))
    out["get_new"] = await c.get(tid)
    out["state_new"] = await c.get_state(tid)
    out["history_new"] = await c.get_history(tid, limit=10)
    out["wait"] = await rec.client.runs.wait(tid, "agent", input=question(ARITHMETIC))
    out["get"] = await c.get(tid)
    out["update"] = await c.update(tid, metadata={"label": "x"})
    out["search"] = await c.search(metadata={"owner": "differential"}, limit=5)
    out["state"] = await c.get_state(tid)
    out["state_at"] = await c.get_state(tid, checkpoint_id=out["state"]["parent_checkpoint"]["checkpoint_id"])
    out["history"] = await c.get_history(tid, limit=3)
    out["runs"] = await rec.client.runs.list(tid)
    out["responses"] = rec.take()
    return out


async def errors(rec: Recorder) -> dict[str, Any]:
    """What a server says to requests it must refuse (and to two it may take)."""
    client, http = rec.client, rec.client.http
    tid = (await client.threads.create())["thread_id"]
    missing = str(uuid.uuid4())
    body = {"assistant_id": "agent", "input": question(ARITHMETIC)}
    wait = f"/threads/{tid}/runs/wait"
    out = {
        "unknown_assistant_run": await refusal(http.post(wait, json=body | {"assistant_id": "no-such-assistant"})),
        "unknown_assistant_id_run": await refusal(http.post(wait, json=body | {"assistant_id": missing})),
        "unknown_assistant_stream": await refusal(events(client.runs.stream(tid, "no-such-assistant",
                                                                             input=question(ARITHMETIC)))),
        "unknown_thread_get": await refusal(client.threads.get(missing)),
        "unknown_thread_state": await refusal(client.threads.get_state(missing)),
        "unknown_thread_history": await refusal(client.threads.get_history(missing)),
        "unknown_thread_stream": await refusal(events(client.runs.stream(missing, "agent",
                                                                          input=question(ARITHMETIC)))),
        "unknown_run_get": await refusal(client.runs.get(tid, missing)),
        "unknown_field": await refusal(http.post(wait, json=body | {"no_such_field": 1})),
        "unsupported_field": await refusal(http.post(wait, json=body | {"interrupt_before": ["tools"]})),
        "unknown_stream_mode": await refusal(http.post(wait, json=body | {"stream_mode": ["no-such-mode"]})),
        "unknown_strategy": await refusal(http.post(wait, json=body | {"multitask_strategy": "no-such-strategy"})),
        "input_and_command": await refusal(http.post(wait, json=body | {"command": {"resume": "x"}})),
        "no_body": await refusal(http.post(wait, json=None)),
    }
    rec.take()
    return out


async def busy_until_progress(rec: Recorder, tid: str) -> str:
    """Start the long run on ``tid`` and return its id once its tool reports progress."""
    run = await rec.client.runs.create(tid, "agent", input=question(LONG), stream_mode=["custom"],
                                       stream_resumable=True)
    async with asyncio.timeout(RUN_GUARD_S):
        async for part in rec.client.runs.join_stream(tid, run["run_id"], last_event_id="-1"):
            if part.event == "custom" and part.data.get("agent_ng") == "tool_progress":
                break
    return run["run_id"]


async def busy(rec: Recorder) -> dict[str, Any]:
    """A second run on a thread whose run is busy, under each ``multitask_strategy``."""
    return {strategy: await attempt(rec, second_run(rec, strategy)) for strategy in STRATEGIES}


async def second_run(rec: Recorder, strategy: str) -> dict[str, Any]:
    """The second request's status, then both runs' final status and the thread's messages."""
    runs = rec.client.runs
    tid = (await rec.client.threads.create())["thread_id"]
    first = await busy_until_progress(rec, tid)
    second: dict[str, Any] = {}
    case: dict[str, Any] = {}
    try:
        second = await runs.create(tid, "agent", input=question(ARITHMETIC), multitask_strategy=strategy)
        case["second_status"] = 200
        case["second_run_status"] = second["status"]
    except httpx.HTTPStatusError as error:
        case["second_status"] = error.response.status_code
        case["second_detail"] = error.response.text[:300]
    if not second or strategy == "enqueue":
        await runs.cancel(tid, first)
    async with asyncio.timeout(RUN_GUARD_S):
        case["first_join"] = await status_of(runs.join(tid, first))
        if second:
            case["second_join"] = await runs.join(tid, second["run_id"])
    case["first_final"] = await _run_status(rec, tid, first)
    case["second_final"] = await _run_status(rec, tid, second["run_id"]) if second else None
    state = await rec.client.threads.get_state(tid)
    case["messages"] = [m["type"] for m in state["values"].get("messages", [])] if state["values"] else []
    case["thread_status"] = (await rec.client.threads.get(tid))["status"]
    case["responses"] = rec.take()
    return case


async def attempt(rec: Recorder, scenario) -> dict[str, Any]:
    """A scenario's recording; if it fails, what failed and the responses up to then, so one
    failure does not hide what the other scenarios show."""
    try:
        return await scenario
    except Exception as error:  # noqa: BLE001 - recorded for the comparison to report
        said = f" {error.response.text[:300]}" if isinstance(error, httpx.HTTPStatusError) else ""
        return {"failed": f"{type(error).__name__}: {error}{said}", "responses": rec.take()}


async def _run_status(rec: Recorder, tid: str, run_id: str) -> str | int:
    try:
        return (await rec.client.runs.get(tid, run_id))["status"]
    except httpx.HTTPStatusError as error:
        return error.response.status_code


async def assistants(rec: Recorder) -> dict[str, Any]:
    """The one assistant: found by search (by graph id too), read by its id, its graph and schemas."""
    c = rec.client.assistants
    found = await c.search()
    aid = found[0]["assistant_id"]
    out = {
        "search": found,
        "search_graph": await c.search(graph_id="agent"),
        "get": await c.get(aid),
        "graph": await c.get_graph(aid),
        "graph_xray": await c.get_graph(aid, xray=True),
        "schemas": await c.get_schemas(aid),
        "subgraphs": await c.get_subgraphs(aid),
        "get_by_graph_name": await status_of(c.get("agent")),
        "get_unknown": await status_of(c.get(str(uuid.uuid4()))),
    }
    out["responses"] = rec.take()
    return out


async def traffic(url: str) -> dict[str, Any]:
    """Run the client script against the server at ``url``; every scenario's recording."""
    rec = Recorder(url)
    return {name: await attempt(rec, scenario(rec)) for name, scenario in SCENARIOS.items()}


async def info(rec: Recorder) -> dict[str, Any]:
    return await rec.client.http.get("/info")


SCENARIOS = {"info": info, "assistants": assistants, "streams": streams, "threads": threads,
             "errors": errors, "busy": busy}


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="langgraph-traffic-") as home, langgraph_dev(
        Path(home), **DEV_ENV, AGENT_DATA_DIR=home
    ) as url:
        recorded = asyncio.run(traffic(url))
    out.write_text(json.dumps(recorded, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
