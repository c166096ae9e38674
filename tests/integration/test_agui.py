"""``POST /agui``: the runs in the AG-UI protocol, checked by ``ag-ui-validate`` (zero errors,
zero warnings) on the live endpoint, and by what a client rebuilds from the events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import httpx
from ag_ui_validate.protocol.jsonpatch import PatchOk, apply_patch
from ag_ui_validate.pytest_plugin import assert_valid_agui, validate_agui_endpoint
from langchain_core.tools import tool

from agent_ng.graph.events import AgentEvent
from agent_ng.models.offline import OfflineChatModel
from agent_ng.service.agui import AguiTranslation
from agent_ng.service.app import create_app
from agent_ng.service.settings import ServiceSettings
from agent_ng.tools import progress
from tests.helpers.graph_runs import until_cancelled, until_released
from tests.helpers.live_server import serving
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 15


def settings(**overrides) -> ServiceSettings:
    return ServiceSettings(
        **{"checkpoint_url": "memory://", "cache_url": "memory://", "system_prompt": "", "api_key": None, **overrides}
    )


def run_input(thread: str, text: str, run: str = "run-1") -> dict:
    return {
        "threadId": thread,
        "runId": run,
        "state": {},
        "messages": [{"id": f"msg-{run}", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


@tool
def crunch(n: int) -> int:
    """Reports progress n times."""
    for k in range(1, n + 1):
        progress.report(k / n, f"step {k} of {n}")
    return n


@tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("boom")


async def post_events(base_url: str, body: dict) -> list[dict]:
    async with httpx.AsyncClient(base_url=base_url, timeout=GUARD_S) as c, asyncio.timeout(GUARD_S):
        async with c.stream("POST", "/agui", json=body) as r:
            assert r.status_code == 200
            return [
                json.loads(line[5:]) async for line in r.aiter_lines() if line.startswith("data:")
            ]


def activities(events: list[dict]) -> dict[str, dict]:
    """Each activity message's content, rebuilt from its snapshot and deltas as a client would."""
    content: dict[str, dict] = {}
    for e in events:
        if e["type"] == "ACTIVITY_SNAPSHOT":
            content[e["messageId"]] = e["content"]
        elif e["type"] == "ACTIVITY_DELTA":
            result = apply_patch(content[e["messageId"]], e["patch"])
            assert isinstance(result, PatchOk), result
            content[e["messageId"]] = result.result
    return content


async def test_parallel_tools_with_progress_pass_the_validator_and_rebuild_on_the_client():
    turn = [
        Reply(
            text="Let me work. ",
            tool_calls=[("crunch", {"n": 3}), ("crunch", {"n": 2}), ("explode", {})],
        ),
        Reply(text="Five steps done; one tool failed."),
    ]
    model = ScriptedModel(replies=turn * 2)  # one run for the validator, one read here
    with serving(create_app(settings(), model=model, tools=[crunch, explode])) as url:
        report = await validate_agui_endpoint(
            f"{url}/agui", input=run_input("t1", "crunch please"), timeout_ms=GUARD_S * 1000
        )
        events = await post_events(url, run_input("t2", "crunch please", "run-2"))

    problems = [d for d in report.diagnostics if d.severity != "info"]
    assert report.summary.errors == 0 and report.summary.warnings == 0, problems
    assert report.event_count > 20, "the validator read the whole run"

    types = [e["type"] for e in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert events[0]["threadId"] == "t2" and events[0]["runId"] == "run-2"
    starts = [e for e in events if e["type"] == "TOOL_CALL_START"]
    [first_text] = [e for e in events if e["type"] == "TEXT_MESSAGE_START"][:1]
    assert {s["parentMessageId"] for s in starts} == {first_text["messageId"]}
    args = {
        e["toolCallId"]: json.loads(e["delta"]) for e in events if e["type"] == "TOOL_CALL_ARGS"
    }
    assert sorted(json.dumps(a) for a in args.values()) == ['{"n": 2}', '{"n": 3}', "{}"]

    by_call = {c["toolCallId"]: c for c in activities(events).values()}
    assert len(by_call) == 3
    for call_id, content in by_call.items():
        if args[call_id]:
            assert content["status"] == "done" and content["progress"] == 1.0
            assert content["message"] == f"step {args[call_id]['n']} of {args[call_id]['n']}"
        else:
            assert content["status"] == "error" and "boom" in content["error"]
    progress_deltas = [
        e
        for e in events
        if e["type"] == "ACTIVITY_DELTA" and any(p["path"] == "/progress" for p in e["patch"])
    ]
    assert len(progress_deltas) >= 5

    results = {e["toolCallId"]: e["content"] for e in events if e["type"] == "TOOL_CALL_RESULT"}
    for call_id, call_args in args.items():
        assert results[call_id] == str(call_args["n"]) if call_args else "boom" in results[call_id]
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "Let me work. Five steps done; one tool failed."
    assert events[-1]["usage"] == [{"inputTokens": 20, "outputTokens": 10, "totalTokens": 30}]


async def test_a_thread_continues_across_runs_and_a_failed_run_ends_in_run_error():
    model = ScriptedModel(replies=[Reply(text="first answer"), Reply(text="second answer")])
    with serving(create_app(settings(), model=model, tools=[])) as url:
        first = await post_events(url, run_input("t1", "one", "r1"))
        second = await post_events(url, run_input("t1", "two", "r2"))
        failed = await post_events(
            url, run_input("t1", "three", "r3")
        )  # the script has no third reply
        failed_report = await validate_agui_endpoint(
            f"{url}/agui", input=run_input("t1", "four", "r4"), timeout_ms=GUARD_S * 1000
        )

    for events in (first, second, failed):
        assert_valid_agui(events, max_warnings=0)
    assert failed_report.summary.errors == 0 and failed_report.summary.warnings == 0
    assert [m.text for m in model.seen[1]] == ["one", "first answer", "two"]
    assert second[-1]["type"] == "RUN_FINISHED" and second[-1]["runId"] == "r2"
    assert failed[-1]["type"] == "RUN_ERROR" and "the script has 2 replies" in failed[-1]["message"]


async def test_a_client_that_goes_away_cancels_the_run_and_the_thread_stays_valid():
    cancelled = []

    forever = until_cancelled(cancelled)

    model = ScriptedModel(replies=[Reply(tool_calls=[("forever", {})]), Reply(text="back")])
    with serving(create_app(settings(), model=model, tools=[forever])) as url:
        async with httpx.AsyncClient(base_url=url, timeout=GUARD_S) as c:
            async with (
                asyncio.timeout(GUARD_S),
                c.stream("POST", "/agui", json=run_input("t1", "go", "r1")) as r,
            ):
                async for line in r.aiter_lines():
                    if '"ACTIVITY_SNAPSHOT"' in line:
                        break  # leaving the block closes the connection mid-tool
            second = await post_events(url, run_input("t1", "again", "r2"))

    assert cancelled == ["forever"]
    assert_valid_agui(second, max_warnings=0)
    kinds = [type(m).__name__ for m in model.seen[1]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "HumanMessage"]


def test_events_for_a_call_that_never_started_still_make_a_valid_activity():
    translation = AguiTranslation("t1", "r1")
    event = lambda type_, **f: AgentEvent(type_, "run", "t1", 0.0, **f)  # noqa: E731
    stream = [
        event("run_start", input="go"),
        event("tool_call", tool_call_id="c1", name="add", args="[1, 2]"),
        event(
            "tool_result",
            tool_call_id="c1",
            name="add",
            content="Error: not valid JSON",
            status="error",
        ),
        event(
            "tool_error",
            tool_call_id="c1",
            name="add",
            error="Error: not valid JSON",
            elapsed_s=0.0,
        ),
        event("content", text="Sorry."),
        event("run_end", status="done", usage={}),
    ]
    out = [
        json.loads(e.model_dump_json(by_alias=True))
        for s in stream
        for e in translation.translate(s)
    ]

    assert_valid_agui(out, max_warnings=0)
    [activity] = activities(out).values()
    assert activity["status"] == "error" and activity["error"] == "Error: not valid JSON"


def test_a_run_waiting_for_a_person_finishes_with_an_interrupt_outcome():
    translation = AguiTranslation("t1", "r1")
    stream = [
        AgentEvent("run_start", "run", "t1", 0.0, input="delete it"),
        AgentEvent("interrupt", "run", "t1", 0.1, value={"tool": "delete", "question": "allow?"}),
        AgentEvent("run_end", "run", "t1", 0.2, status="interrupted", usage={}),
    ]
    out = [
        json.loads(e.model_dump_json(by_alias=True))
        for s in stream
        for e in translation.translate(s)
    ]

    assert_valid_agui(out, max_warnings=0)
    [interrupt] = out[-1]["outcome"]["interrupts"]
    assert out[-1]["outcome"]["type"] == "interrupt"
    assert json.loads(interrupt["message"]) == {"tool": "delete", "question": "allow?"}


def test_the_ag_ui_validate_command_passes_the_live_endpoint_with_the_offline_model():
    app = create_app(settings(api_key="k"), model=OfflineChatModel())
    with serving(app) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ag_ui_validate.cli",
                f"{url}/agui",
                "--json",
                "--max-warnings",
                "0",
                "--header",
                "Authorization: Bearer k",
                "--timeout",
                str(GUARD_S),
            ],
            capture_output=True,
            text=True,
            timeout=GUARD_S * 2,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["summary"]["errors"] == 0 and report["summary"]["warnings"] == 0


async def test_an_agui_run_holds_one_of_max_runs_and_past_it_another_gets_503():
    released, started = threading.Event(), threading.Event()

    model = ScriptedModel(replies=[calls(("hold", {})), Reply(text="done")])
    app = create_app(settings(max_runs=1, retry_after_s=4), model=model, tools=[until_released(released, started, GUARD_S)])
    with serving(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=GUARD_S) as c, asyncio.timeout(GUARD_S):
            first = asyncio.create_task(post_events(url, run_input("t1", "hold on")))
            assert await asyncio.to_thread(started.wait, GUARD_S)
            refused = await c.post("/agui", json=run_input("t2", "and me?", run="run-2"))
            native = await c.post("/threads/t3/runs/stream", json={"input": "me too?"})
            held = app.state.runs.held()
            released.set()
            got = await first

    assert refused.status_code == 503 and refused.headers["retry-after"] == "4"
    assert native.status_code == 503
    assert held == 1
    assert got[-1]["type"] == "RUN_FINISHED"
