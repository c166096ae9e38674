"""The LangGraph Server API's runs under ``/langgraph``, driven by the unmodified clients.

``langgraph_sdk`` (async and sync) and ``RemoteGraph`` talk to the real service over real HTTP
(``tests.helpers.live_server``), with the offline model: it asks for ``calculator`` and
``count_primes`` (which reports progress) in parallel. A test that needs a run to be "still
running" asks for ``file_search``, here a gate the test opens: what the test sees mid-run is
decided by the test, not by timing. The codes and bodies expected are the ones ``langgraph dev``
(``langgraph_api`` 0.16.7) gave for the same requests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import httpx
import langgraph.version
import pytest
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from agent_ng.models.offline import OfflineChatModel
from agent_ng.service.app import create_app
from agent_ng.service.settings import ServiceSettings
from agent_ng.tools.calculator import calculator
from agent_ng.tools.primes import count_primes
from agent_ng.tools.registry import configure
from tests.helpers.live_server import serving
from tests.helpers.sse import events, frames
from tests.helpers.system import REDIS_URL

GUARD_S = 15
QUESTION = "what is 17*23 and how many primes are below 200000?"
MODES = ["values", "updates", "messages-tuple", "custom"]


@dataclass
class Gate:
    """A ``file_search`` call that runs until the test opens it."""

    started: Future = field(default_factory=Future)
    opened: Future = field(default_factory=Future)

    def open(self) -> None:
        self.opened.set_result(None)

    async def running(self) -> None:
        await asyncio.wait_for(asyncio.wrap_future(self.started), GUARD_S)


GATES: dict[str, Gate] = {}


def gate() -> tuple[str, Gate]:
    """A new gate and the question whose run waits on it."""
    key = f"gate-{uuid.uuid4().hex[:8]}"
    GATES[key] = Gate()
    return f"search the files for {key}", GATES[key]


@tool
async def file_search(pattern: str) -> str:
    """Search files for a pattern (in these tests: wait until the test opens the gate)."""
    held = GATES[pattern]
    if not held.started.done():
        held.started.set_result(None)
    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(held.opened)), GUARD_S)
    return f"{pattern} found in 1 file"


def settings(**overrides) -> ServiceSettings:
    base = {"checkpoint_url": "memory://", "cache_url": "memory://", "system_prompt": "", "api_key": None}
    return ServiceSettings(**{**base, **overrides})


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = create_app(settings(sse_ping_s=0.2), model=OfflineChatModel(), tools=[calculator, count_primes, file_search])
    with serving(app) as url:
        yield f"{url}/langgraph"
        open_all()


def open_all() -> None:
    """Let every gate go while its server still runs: a cancelled call still waits on its gate."""
    for held in GATES.values():
        if not held.opened.done():
            held.open()


def ask(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


async def new_thread(client) -> str:
    return (await client.threads.create())["thread_id"]


async def test_a_stream_sends_metadata_then_tokens_tool_records_updates_and_values(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    async with asyncio.timeout(GUARD_S):
        parts = [p async for p in client.runs.stream(thread, "agent", input=ask(QUESTION), stream_mode=MODES)]

    assert parts[0].event == "metadata"
    run_id = parts[0].data["run_id"]
    tokens = [p.data for p in parts if p.event == "messages"]
    model_tokens = [(chunk, meta) for chunk, meta in tokens if meta["langgraph_node"] == "llm" and chunk["content"]]
    assert len(model_tokens) > 5, "the answer arrives as many token chunks"
    assert all(chunk["id"] and chunk["type"] == "AIMessageChunk" for chunk, _ in model_tokens)
    assert "".join(c["content"] for c, _ in model_tokens) == "17*23 = 391. There are 17,984 primes below 200,000."
    records = [p.data for p in parts if p.event == "custom"]
    calls = {r["tool_call_id"]: r["name"] for r in records if r["agent_ng"] == "tool_start"}
    assert sorted(calls.values()) == ["calculator", "count_primes"]
    progress = [r for r in records if r["agent_ng"] == "tool_progress"]
    assert progress and {calls[r["tool_call_id"]] for r in progress} == {"count_primes"}
    updates = [next(iter(p.data)) for p in parts if p.event == "updates"]
    assert updates.count("tools") == 2 and "llm" in updates
    assert parts[-1].event == "values"
    assert parts[-1].data["messages"][-1]["content"].startswith("17*23 = 391.")

    run = await client.runs.get(thread, run_id)
    assert run["status"] == "success" and run["assistant_id"] == "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
    assert run["kwargs"]["stream_mode"] == MODES
    described = {"run_id": run_id, "thread_id": thread, "user_id": "", "run_attempt": 1,
                 "langgraph_version": langgraph.version.__version__}
    assert all(meta.items() >= described.items() for _, meta in model_tokens), "as langgraph_api describes a run"
    assert run["kwargs"]["config"]["metadata"].items() >= described.items()
    assert (await client.threads.get_state(thread))["metadata"]["run_id"] == run_id
    assert [r["run_id"] for r in await client.runs.list(thread)] == [run_id]
    assert (await client.threads.get(thread))["metadata"]["graph_id"] == "agent"


async def test_the_older_messages_mode_and_the_debug_and_events_modes_stream_as_langgraph_dev_names_them(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    async with asyncio.timeout(GUARD_S):
        names = [p.event async for p in client.runs.stream(
            thread, "agent", input=ask("what is 2*3?"), stream_mode=["messages", "debug", "events"])]

    assert names[0] == "metadata"
    assert {"messages/metadata", "messages/partial", "messages/complete", "debug", "events"} <= set(names)
    assert names.index("messages/metadata") < names.index("messages/partial")


async def test_the_stream_is_event_stream_with_locations_ids_when_resumable_and_heartbeats(base):
    ask_held, held = gate()
    async with httpx.AsyncClient(base_url=base, timeout=GUARD_S) as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        body = {"assistant_id": "agent", "input": ask(ask_held), "stream_resumable": True, "stream_mode": ["custom"]}
        seen = []
        async with asyncio.timeout(GUARD_S), http.stream("POST", f"/threads/{thread}/runs/stream", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            run_id = r.headers["content-location"].rsplit("/", 1)[1]
            assert r.headers["location"] == f"/threads/{thread}/runs/{run_id}/stream"
            assert r.headers["content-location"] == f"/threads/{thread}/runs/{run_id}"
            async for frame in frames(r):
                seen.append(frame)
                if frame.comment == "heartbeat" and not held.opened.done():
                    assert held.started.done(), "heartbeats come while the tool runs"
                    held.open()
        plain = await http.post(f"/threads/{thread}/runs/wait", json={"assistant_id": "agent", "input": ask("2+2?")})

    named = [f for f in seen if f.comment is None]
    assert named[0].event == "metadata" and named[0].data["run_id"] == run_id
    assert all(f.id for f in named), "a resumable run's events carry ids"
    assert any(f.comment == "heartbeat" for f in seen)
    assert plain.headers["location"].endswith("/join") and plain.json()["messages"][-1]["content"] == "2+2 = 4."


async def test_a_stream_that_is_not_resumable_has_no_event_ids_and_its_status_is_final_when_it_closes(base):
    async with httpx.AsyncClient(base_url=base, timeout=GUARD_S) as http:
        thread = (await http.post("/threads", json={})).json()["thread_id"]
        body = {"assistant_id": "agent", "input": ask("what is 2*3?")}
        async with asyncio.timeout(GUARD_S), http.stream("POST", f"/threads/{thread}/runs/stream", json=body) as r:
            got = [f async for f in events(r)]
        run = (await http.get(f"/threads/{thread}/runs/{got[0].data['run_id']}")).json()

    assert [f.event for f in got][:2] == ["metadata", "values"] and not any(f.id for f in got)
    assert run["status"] == "success", "the SDK re-opens a stream whose run still reads pending or running"


async def test_a_background_run_is_joined_and_a_dropped_resumable_stream_resumes_losing_and_repeating_nothing(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    ask_held, held = gate()
    run = await client.runs.create(thread, "agent", input=ask(f"{ask_held} and what is 6*7?"),
                                   stream_mode=["values", "custom", "messages-tuple"], stream_resumable=True)
    assert run["status"] in ("pending", "running")

    first = []
    async with asyncio.timeout(GUARD_S):
        async for part in client.runs.join_stream(thread, run["run_id"]):
            first.append(part)
            if part.event == "custom" and part.data.get("agent_ng") == "tool_start" and part.data["name"] == "file_search":
                break
    held.open()
    async with asyncio.timeout(GUARD_S):
        rest = [p async for p in client.runs.join_stream(thread, run["run_id"], last_event_id=first[-1].id)]
        whole = [p async for p in client.runs.join_stream(thread, run["run_id"])]
        joined = await client.runs.join(thread, run["run_id"])

    assert [p.id for p in first + rest] == [p.id for p in whole]
    assert [(p.event, p.data) for p in first + rest] == [(p.event, p.data) for p in whole]
    assert whole[0].event == "metadata" and len(rest) > 3
    assert joined["messages"][-1]["content"].endswith("6*7 = 42.")
    assert (await client.runs.get(thread, run["run_id"]))["status"] == "success"


async def test_through_redis_a_second_replica_joins_resumes_and_cancels_the_run_of_the_first(redis_prefix):
    replica = settings(redis_url=REDIS_URL, redis_prefix=redis_prefix)
    tools = [calculator, count_primes, file_search]
    first_app, second_app = (create_app(replica, model=OfflineChatModel(), tools=tools) for _ in range(2))
    with serving(first_app) as first_url, serving(second_app) as second_url:
        first, second = get_client(url=f"{first_url}/langgraph"), get_client(url=f"{second_url}/langgraph")
        thread = await new_thread(first)
        ask_held, held = gate()
        run = await first.runs.create(thread, "agent", input=ask(ask_held), stream_mode=["values", "custom"],
                                      stream_resumable=True)
        async with asyncio.timeout(GUARD_S):
            joined = second.runs.join_stream(thread, run["run_id"])
            opening = await anext(joined)
            await joined.aclose()
            await held.running()
            await second.runs.cancel(thread, run["run_id"])
            rest = [p async for p in second.runs.join_stream(thread, run["run_id"], last_event_id=opening.id)]
            whole = [p async for p in second.runs.join_stream(thread, run["run_id"])]
        status = (await first.runs.get(thread, run["run_id"]))["status"]
        never_opened = not held.opened.done()
        open_all()

    assert opening.event == "metadata"
    assert [(p.id, p.event, p.data) for p in [opening, *rest]] == [(p.id, p.event, p.data) for p in whole]
    assert "custom" in {p.event for p in rest}
    assert status == "interrupted" and never_opened


async def test_the_location_a_stream_names_is_reopened_through_the_prefix_as_the_sdk_reconnects(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    async with httpx.AsyncClient(base_url=base, timeout=GUARD_S) as http:
        body = {"assistant_id": "agent", "input": ask("what is 3*3?"), "stream_resumable": True}
        async with http.stream("POST", f"/threads/{thread}/runs/stream", json=body) as r:
            location = r.headers["location"]
            first = [f async for f in events(r)]
    async with asyncio.timeout(GUARD_S):
        again = [p async for p in client.http.stream(location, "GET", headers={"Last-Event-ID": first[0].id})]

    assert location.startswith("/threads/"), "relative to the API root, as langgraph dev sends it"
    assert [p.id for p in again] == [f.id for f in first[1:]]


async def test_a_last_event_id_before_every_event_replays_the_run_from_its_start(base):
    """``-1`` is the JS SDK's ``joinStream`` default (and a reloaded page's); ``langgraph dev``
    replays from the start for it, for ``0`` and for ``-`` (its ids compare as text)."""
    client = get_client(url=base)
    thread = await new_thread(client)
    async with asyncio.timeout(GUARD_S):
        sent = [p async for p in client.runs.stream(thread, "agent", input=ask("what is 3*4?"), stream_resumable=True)]
        run_id = sent[0].data["run_id"]
        replays = {start: [p.id async for p in client.runs.join_stream(thread, run_id, last_event_id=start)]
                   for start in ("-1", "0", "-")}
        after_first = [p.id async for p in client.runs.join_stream(thread, run_id, last_event_id=sent[0].id)]
    with pytest.raises(UnprocessableEntityError):
        await anext(client.runs.join_stream(thread, run_id, last_event_id="not-an-id"))

    assert len(sent) > 2
    assert replays == {start: [p.id for p in sent] for start in replays}
    assert after_first == [p.id for p in sent[1:]]


async def test_cancel_stops_a_running_run_and_a_second_cancel_gets_404(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    ask_held, held = gate()
    run = await client.runs.create(thread, "agent", input=ask(ask_held))
    await held.running()
    await client.runs.cancel(thread, run["run_id"], wait=True)

    assert (await client.runs.get(thread, run["run_id"]))["status"] == "interrupted"
    with pytest.raises(NotFoundError):
        await client.runs.cancel(thread, run["run_id"])
    state = await client.threads.get_state(thread)
    assert state["values"]["messages"][-1]["type"] == "tool", "the stopped call's result is settled"
    assert not held.opened.done()


async def test_after_a_cancel_wait_join_and_cancel_wait_answer_the_settled_thread(base):
    """A stop settles the thread after the run's last ``values`` frame (the stopped call gets its
    "cancelled" result): every answer of the run's values is that settled state, as ``langgraph
    dev``'s agree with its state."""
    client = get_client(url=base)
    thread = await new_thread(client)
    ask_held, held = gate()
    created = []
    async with asyncio.timeout(GUARD_S):
        waiting = asyncio.create_task(client.runs.wait(thread, "agent", input=ask(ask_held), on_run_created=created.append))
        await held.running()
        cancelled = await client.runs.cancel(thread, created[0]["run_id"], wait=True)
        waited = await waiting
        joined = await client.runs.join(thread, created[0]["run_id"])
    state = (await client.threads.get_state(thread))["values"]

    assert [m["type"] for m in state["messages"]] == ["human", "ai", "tool"]
    assert state["messages"][-1]["status"] == "error" and "cancelled" in state["messages"][-1]["content"]
    assert waited == joined == cancelled == state
    assert not held.opened.done()


async def test_a_stopped_run_that_started_from_a_checkpoint_is_settled_too(base):
    """agent-chat-ui's edit and regenerate run from a checkpoint: a stop during such a run settles
    the run's newest checkpoint (its call gets its "cancelled" result), not the one it started from."""
    client = get_client(url=base)
    thread = await new_thread(client)
    ask_held, held = gate()
    async with asyncio.timeout(GUARD_S):
        await client.runs.wait(thread, "agent", input=ask("what is 2*3?"))
        head = (await client.threads.get_state(thread))["checkpoint"]
        run = await client.runs.create(thread, "agent", input=ask(ask_held), checkpoint=head)
        await held.running()
        await client.runs.cancel(thread, run["run_id"], wait=True)
    state = await client.threads.get_state(thread)

    assert [m["type"] for m in state["values"]["messages"]][-3:] == ["human", "ai", "tool"]
    assert "cancelled" in state["values"]["messages"][-1]["content"] and state["next"] == []


async def test_multitask_strategies_on_a_busy_thread_answer_as_langgraph_dev(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    ask_held, held = gate()
    first = await client.runs.create(thread, "agent", input=ask(ask_held))
    await held.running()

    with pytest.raises(ConflictError):
        await client.runs.create(thread, "agent", input=ask("2*2?"), multitask_strategy="reject")
    with pytest.raises(httpx.HTTPStatusError) as refused:  # the SDK's wait raises httpx's own error
        await client.runs.wait(thread, "agent", input=ask("2*2?"), multitask_strategy="reject")
    assert refused.value.response.status_code == 409
    queued = await client.runs.create(thread, "agent", input=ask("what is 5*5?"), multitask_strategy="enqueue")
    assert (await client.runs.get(thread, queued["run_id"]))["status"] == "pending"
    async with asyncio.timeout(GUARD_S):
        last = await client.runs.wait(thread, "agent", input=ask("what is 7*7?"), multitask_strategy="interrupt")

    statuses = {r["run_id"]: r["status"] for r in await client.runs.list(thread)}
    assert statuses[first["run_id"]] == statuses[queued["run_id"]] == "interrupted"
    assert last["messages"][-1]["content"] == "7*7 = 49."
    assert list(statuses.values())[0] == "success", "newest first"


async def test_rollback_on_a_busy_thread_deletes_the_running_run_so_the_next_one_starts_where_the_thread_was(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    async with asyncio.timeout(GUARD_S):
        await client.runs.wait(thread, "agent", input=ask("what is 2*3?"))
    earlier = (await client.threads.get_state(thread))["values"]["messages"]
    ask_held, held = gate()
    first = await client.runs.create(thread, "agent", input=ask(ask_held))
    await held.running()
    created = []
    async with asyncio.timeout(GUARD_S):
        answer = await client.runs.wait(thread, "agent", input=ask("what is 7*7?"), multitask_strategy="rollback",
                                        on_run_created=created.append)
    messages = (await client.threads.get_state(thread))["values"]["messages"]

    assert messages[: len(earlier)] == earlier
    assert [(m["type"], m["content"]) for m in messages[len(earlier):] if m["type"] != "tool"] == [
        ("human", "what is 7*7?"), ("ai", ""), ("ai", "7*7 = 49.")], "nothing of the first run is left"
    assert answer["messages"] == messages
    with pytest.raises(NotFoundError):
        await client.runs.get(thread, first["run_id"])
    assert created[0]["run_id"] in [r["run_id"] for r in await client.runs.list(thread)]
    assert not held.opened.done()


async def test_cancel_with_rollback_leaves_the_thread_as_it_was_before_the_run(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    async with asyncio.timeout(GUARD_S):
        await client.runs.wait(thread, "agent", input=ask("what is 2*3?"))
    earlier = await client.threads.get_state(thread)
    ask_held, held = gate()
    run = await client.runs.create(thread, "agent", input=ask(ask_held))
    await held.running()
    async with asyncio.timeout(GUARD_S):
        answered = await client.runs.cancel(thread, run["run_id"], wait=True, action="rollback")
    now = await client.threads.get_state(thread)

    assert now["checkpoint"] == earlier["checkpoint"] and now["values"] == earlier["values"] == answered
    with pytest.raises(NotFoundError):
        await client.runs.get(thread, run["run_id"])


async def test_unsupported_fields_and_values_are_422s_that_name_them(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    cases = [
        ({"webhook": "http://example.com/hook"}, ["body", "webhook"]),
        ({"interrupt_before": ["tools"]}, ["body", "interrupt_before"]),
        ({"stream_mode": ["tools"]}, ["body", "stream_mode"]),
        ({"input": {"messages": [], "todo": 1}}, ["body", "input", "todo"]),
        ({"config": {"configurable": {"__pregel_resuming": True}}}, ["body", "config", "configurable", "__pregel_resuming"]),
        ({"assistant_id": "not-an-assistant"}, ["body", "assistant_id"]),
    ]
    async with httpx.AsyncClient(base_url=base, timeout=GUARD_S) as http:
        for extra, loc in cases:
            body = {"assistant_id": "agent", "input": ask("2*2?"), **extra}
            r = await http.post(f"/threads/{thread}/runs/stream", json=body)
            assert r.status_code == 422, (extra, r.text)
            assert any(e["loc"][: len(loc)] == loc for e in r.json()["detail"]), (loc, r.json())
    assert await client.runs.list(thread) == [], "nothing was started"


async def test_unknown_threads_assistants_and_runs_get_langgraph_devs_answers(base):
    client = get_client(url=base)
    unknown = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=base, timeout=GUARD_S) as http:
        body = {"assistant_id": "agent", "input": ask("2*2?")}
        for path in ("runs/stream", "runs", "runs/wait"):
            r = await http.post(f"/threads/{unknown}/{path}", json=body)
            assert (r.status_code, r.json()) == (404, {"detail": "Thread or assistant not found."})
        thread = await new_thread(client)
        r = await http.post(f"/threads/{thread}/runs", json={**body, "assistant_id": str(uuid.uuid4())})
        assert (r.status_code, r.json()) == (404, {"detail": "Thread or assistant not found."})
        r = await http.get(f"/threads/{unknown}/runs")
        assert (r.status_code, r.json()) == (404, {"detail": f"Thread with ID {unknown} not found"})
        assert (await http.get(f"/threads/{thread}/runs/{unknown}")).status_code == 404
        r = await http.post(f"/threads/{thread}/runs/{unknown}/cancel")
        assert (r.status_code, r.json()) == (404, {"detail": "No runs found to cancel."})
        r = await http.get(f"/threads/{thread}/runs/{unknown}/join")
        assert (r.status_code, r.json()) == (200, {"__error__": {"error": "HTTPException", "message": "404: Run not found"}})
    parts = [p async for p in client.runs.join_stream(thread, unknown)]
    assert [(p.event, p.data) for p in parts] == [("error", {"error": "HTTPException", "message": "404: Run not found"})]


async def test_if_not_exists_create_makes_the_thread_and_stateless_runs_delete_theirs_unless_kept(base):
    client = get_client(url=base)
    fresh = str(uuid.uuid4())
    async with asyncio.timeout(GUARD_S):
        made = await client.runs.wait(fresh, "agent", input=ask("what is 4*4?"), if_not_exists="create",
                                      metadata={"source": "test"})
        gone = [p async for p in client.runs.stream(None, "agent", input=ask("what is 5*5?"),
                                                     stream_mode=["values", "messages-tuple"])]
        temporary = next(meta["thread_id"] for p in gone if p.event == "messages" for _, meta in [p.data])
        created = []
        kept = await client.runs.wait(None, "agent", input=ask("what is 6*6?"), on_completion="keep",
                                      on_run_created=created.append)

    assert made["messages"][-1]["content"] == "4*4 = 16."
    assert (await client.threads.get(fresh))["metadata"] == {
        "graph_id": "agent", "assistant_id": "fe096781-5601-53d2-b2f6-0d3403f7e9ca", "source": "test"}
    assert [p.data for p in gone if p.event == "values"][-1]["messages"][-1]["content"] == "5*5 = 25."
    with pytest.raises(NotFoundError):  # gone by the time its stream closed
        await client.threads.get(temporary)
    assert kept["messages"][-1]["content"] == "6*6 = 36."
    state = await client.threads.get_state(created[0]["thread_id"])
    assert state["values"]["messages"][-1]["content"] == "6*6 = 36."


async def test_a_failed_run_streams_an_error_and_its_join_and_wait_answer_the_error(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    too_few_steps = {"recursion_limit": 2}
    async with asyncio.timeout(GUARD_S):
        parts = [p async for p in client.runs.stream(thread, "agent", input=ask("what is 2*3?"), config=too_few_steps)]
        waited = await client.runs.wait(thread, "agent", input=ask("what is 2*3?"), config=too_few_steps, raise_error=False)
        joined = await client.runs.join(thread, parts[0].data["run_id"])

    assert parts[-1].event == "error" and parts[-1].data["error"] == "GraphRecursionError"
    assert waited == joined == {"__error__": parts[-1].data}
    assert [r["status"] for r in await client.runs.list(thread)] == ["error", "error"]


async def test_a_client_that_goes_away_leaves_its_run_going_unless_it_asked_for_cancel(base):
    client = get_client(url=base)
    dropped = {}
    for on_disconnect in ("continue", "cancel"):
        thread, (ask_held, held), created = await new_thread(client), gate(), []
        async with asyncio.timeout(GUARD_S):
            async for part in client.runs.stream(thread, "agent", input=ask(ask_held), stream_mode="custom",
                                                 on_disconnect=on_disconnect, on_run_created=created.append):
                if part.event == "custom" and part.data["agent_ng"] == "tool_start":
                    break
        dropped[on_disconnect] = (thread, created[0]["run_id"], held)

    thread, run_id, _ = dropped["cancel"]
    async with asyncio.timeout(GUARD_S):
        await client.runs.join(thread, run_id)  # ends although its tool was never let go
    assert (await client.runs.get(thread, run_id))["status"] == "interrupted"
    thread, run_id, held = dropped["continue"]
    assert (await client.runs.get(thread, run_id))["status"] == "running", "dropped first, still going"
    held.open()
    async with asyncio.timeout(GUARD_S):
        await client.runs.join(thread, run_id)
    assert (await client.runs.get(thread, run_id))["status"] == "success"


async def test_a_run_goes_on_from_an_earlier_checkpoint_and_takes_context_and_durability(base):
    client = get_client(url=base)
    thread = await new_thread(client)
    async with asyncio.timeout(GUARD_S):
        await client.runs.wait(thread, "agent", input=ask("what is 2*3?"), context={"user": "ann"}, durability="async")
        after_first = (await client.threads.get_state(thread))["checkpoint"]
        await client.runs.wait(thread, "agent", input=ask("what is 2*4?"))
        forked = await client.runs.wait(thread, "agent", input=ask("what is 2*5?"), checkpoint=after_first)
        with pytest.raises(httpx.HTTPStatusError) as missing:
            await client.runs.wait(thread, "agent", input=ask("what is 2*6?"), checkpoint_id=str(uuid.uuid4()))

    assert [m["content"] for m in forked["messages"] if m["type"] == "human"] == ["what is 2*3?", "what is 2*5?"]
    assert missing.value.response.status_code == 404
    oldest = (await client.runs.list(thread))[-1]
    assert (oldest["kwargs"]["durability"], oldest["kwargs"]["context"]) == ("async", {"user": "ann"})


def test_the_sync_client_streams_waits_and_lists(base):
    client = get_sync_client(url=base)
    thread = client.threads.create()["thread_id"]
    parts = list(client.runs.stream(thread, "agent", input=ask("what is 8*8?"), stream_mode="updates"))
    result = client.runs.wait(thread, "agent", input=ask("what is 9*9?"))

    assert parts[0].event == "metadata" and {next(iter(p.data)) for p in parts[1:]} == {"llm", "tools"}
    assert result["messages"][-1]["content"] == "9*9 = 81."
    assert [r["status"] for r in client.runs.list(thread)] == ["success", "success"]


def test_remote_graph_streams_invokes_reads_state_and_history_and_runs_as_a_node(base):
    remote = RemoteGraph("agent", url=base)
    config = {"configurable": {"thread_id": str(uuid.uuid4())}}
    updates = list(remote.stream(ask("what is 11*11?"), config, stream_mode="updates"))
    answer = remote.invoke(ask("what is 12*12?"), config)
    state = remote.get_state(config)
    history = list(remote.get_state_history(config))

    assert {next(iter(u)) for u in updates} == {"llm", "tools"}
    assert answer["messages"][-1]["content"] == "12*12 = 144."
    assert [m["content"] for m in state.values["messages"] if m["type"] == "human"] == ["what is 11*11?", "what is 12*12?"]
    assert len(history) > 4 and history[0].config["configurable"]["checkpoint_id"] == state.config["configurable"]["checkpoint_id"]

    builder = StateGraph(MessagesState)
    builder.add_node("agent", remote)
    builder.add_edge(START, "agent")
    parent = builder.compile(checkpointer=InMemorySaver())
    out = parent.invoke(ask("what is 13*13?"), {"configurable": {"thread_id": str(uuid.uuid4())}})
    assert out["messages"][-1].content == "13*13 = 169."


async def test_remote_graph_without_a_thread_runs_stateless(base):
    """No thread in the config: a stateless run, which ``RemoteGraph`` asks for with
    ``if_not_exists="create"`` all the same."""
    answer = await RemoteGraph("agent", url=base).ainvoke(ask("what is 2*21?"))

    assert answer["messages"][-1]["content"] == "2*21 = 42."


async def test_one_thread_goes_on_across_the_native_route_and_the_langgraph_api(base):
    client = get_client(url=base)
    thread = str(uuid.uuid4())
    native = base.removesuffix("/langgraph")
    async with httpx.AsyncClient(base_url=native, timeout=GUARD_S) as http, asyncio.timeout(GUARD_S):
        async with http.stream("POST", f"/threads/{thread}/runs/stream", json={"input": "what is 2*21?"}) as r:
            assert [f.event async for f in events(r)][-1] == "run_end"
        await client.runs.wait(thread, "agent", input=ask("what is 3*21?"))
        async with http.stream("POST", f"/threads/{thread}/runs/stream", json={"input": "what is 4*21?"}) as r:
            assert [f.event async for f in events(r)][-1] == "run_end"
        messages = (await http.get(f"/threads/{thread}")).json()["messages"]

    assert [m["content"] for m in messages if m["role"] == "user"] == ["what is 2*21?", "what is 3*21?", "what is 4*21?"]
    assert [m["content"] for m in messages if m["role"] == "assistant" and m["content"]] == [
        "2*21 = 42.", "3*21 = 63.", "4*21 = 84."]


async def test_an_approval_interrupt_is_resumed_with_a_command():
    guarded = configure(calculator.model_copy(), requires_approval=True)
    app = create_app(settings(), model=OfflineChatModel(), tools=[guarded, count_primes])
    with serving(app) as url:
        client = get_client(url=f"{url}/langgraph")
        thread = await new_thread(client)
        async with asyncio.timeout(GUARD_S):
            first = [p async for p in client.runs.stream(thread, "agent", input=ask(QUESTION), stream_mode=["values", "custom"])]
            waiting = await client.threads.get_state(thread)
            joined = await client.runs.join(thread, first[0].data["run_id"])
            with pytest.raises(httpx.HTTPStatusError) as refused:
                await client.runs.wait(thread, "agent", input=ask("what is 1+1?"))
            asked = next(p.data for p in first if p.event == "values" and "__interrupt__" in p.data)["__interrupt__"][0]
            resumed = [p async for p in client.runs.stream(
                thread, "agent", command={"resume": {asked["id"]: "approve"}}, stream_mode="values")]

    assert asked["value"]["type"] == "approval" and asked["value"]["name"] == "calculator"
    assert joined["__interrupt__"] == [asked], "a join answers the interrupts the run stopped at"
    done = {r["name"] for r in (p.data for p in first if p.event == "custom") if r["agent_ng"] == "tool_complete"}
    assert done == {"count_primes"}, "the call needing no approval ran meanwhile"
    assert waiting["next"] == ["tools"] and refused.value.response.status_code == 409
    assert resumed[-1].data["messages"][-1]["content"] == "17*23 = 391. There are 17,984 primes below 200,000."
