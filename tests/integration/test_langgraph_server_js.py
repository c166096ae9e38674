"""The JS SDK as agent-chat-ui drives it: ``@langchain/langgraph-sdk`` from npm makes the calls
``useStream`` makes (``tests/js/use_stream_calls.mjs``) against ``langgraph dev`` and against
``agent-ng serve``'s ``/langgraph``, and both must give a chat page what it shows.

The calls, read from the SDK's ``react/stream.lgp.js`` and ``ui/manager.js``: ``GET /info`` (the
page's server check), a thread created, its history with limit 10, a run streaming ``values``,
``messages-tuple`` and ``custom``, resumable, with ``on_disconnect: "continue"``, the history
again, a second run from the head checkpoint, a run stopped by the user (the request aborted,
then ``runs.cancel``) and joined, and a finished run's stream joined from its start (``joinStream``
with ``Last-Event-ID: -1``, what a page reloaded mid-run does). The SDK is installed from
``tests/js/package-lock.json`` into ``tests/js/node_modules`` unless it is there already.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.hostile import agent_serve
from tests.helpers.langgraph_dev import langgraph_dev
from tests.helpers.langgraph_traffic import DEV_ENV
from tests.helpers.paths import REPO
from tests.helpers.system import need

JS = REPO / "tests" / "js"
SCRIPT_GUARD_S = 90
QUESTION = "what is 17*23 and how many primes are below 200000?"
ANSWER = "17*23 = 391. There are 17,984 primes below 200,000."
FOLLOW_UP = "what did I ask before?"
LONG = "how many primes are below 1000000000?"


def installed() -> bool:
    """Whether ``node_modules`` holds exactly what the lock file names (npm's own record of it)."""
    record = JS / "node_modules" / ".package-lock.json"
    if not record.exists():
        return False
    wanted = json.loads((JS / "package-lock.json").read_text())["packages"]
    wanted.pop("", None)
    return json.loads(record.read_text())["packages"] == wanted


@pytest.fixture(scope="module")
def node() -> str:
    need("node")
    if not installed():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300,
                       capture_output=True)
    return shutil.which("node")


@pytest.fixture(params=["langgraph dev", "agent-ng serve"])
def api_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "langgraph dev":
        with langgraph_dev(tmp_path, **DEV_ENV, AGENT_DATA_DIR=str(tmp_path)) as url:
            yield url
    else:
        with agent_serve(tmp_path) as server:
            yield f"{server.url}/langgraph"


def use_stream_calls(node: str, api_url: str) -> dict:
    done = subprocess.run(
        [node, "use_stream_calls.mjs", api_url, "agent", QUESTION, FOLLOW_UP, LONG],
        cwd=JS, capture_output=True, text=True, timeout=SCRIPT_GUARD_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def tokens(run: dict) -> list[dict]:
    """The answer's tokens as ``useStream`` reads them: message tuples of AI chunks with text."""
    return [
        {"content": chunk["content"], "id": chunk["id"], "node": meta.get("langgraph_node")}
        for event in run["events"]
        if event["event"] == "messages"
        for chunk, meta in [event["data"]]
        if chunk["type"] == "AIMessageChunk" and chunk["content"]
    ]


def custom(run: dict, kind: str) -> list[dict]:
    return [e["data"] for e in run["events"] if e["event"] == "custom" and e["data"].get("agent_ng") == kind]


def final_messages(run: dict) -> list[dict]:
    return [e for e in run["events"] if e["event"] == "values"][-1]["data"]["messages"]


def test_use_stream_calls_get_what_a_chat_page_shows(node, api_url):
    report = use_stream_calls(node, api_url)

    assert report["info"]["status"] == 200
    assert report["thread"]["status"] == "idle" and report["history_new"] == []

    first = report["first"]
    assert [e["event"] for e in first["events"][:2]] == ["metadata", "values"]
    assert first["events"][0]["data"]["run_id"] == first["created"]["run_id"]
    assert first["created"]["thread_id"] == report["thread"]["thread_id"]
    assert None not in [e["id"] for e in first["events"]], "a resumable stream gives every event an id"
    answer = tokens(first)
    assert len(answer) > 5 and "".join(t["content"] for t in answer).endswith(ANSWER)
    assert {t["node"] for t in answer} == {"llm"}
    assert len({t["id"] for t in answer}) == 1, "the answer's chunks carry one message id"

    started = {r["tool_call_id"]: r["name"] for r in custom(first, "tool_start")}
    progress = custom(first, "tool_progress")
    assert sorted(started.values()) == ["calculator", "count_primes"]
    assert len(progress) >= 10
    assert {started[p["tool_call_id"]] for p in progress} == {"count_primes"}
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    assert progress[-1]["progress"] == 1

    messages = final_messages(first)
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "tool", "ai"]
    assert messages[-1]["content"] == ANSWER

    history = report["history_after_first"]
    assert history[0]["values"]["messages"] == messages, "the newest state comes first"
    assert [h["metadata"]["step"] for h in history] == sorted((h["metadata"]["step"] for h in history), reverse=True)

    second = report["second"]
    assert "".join(t["content"] for t in tokens(second)) == f'Earlier you asked: "{QUESTION}".'
    assert [m["type"] for m in final_messages(second)] == ["human", "ai", "tool", "tool", "ai", "human", "ai"]
    assert report["history_after_second"][0]["values"]["messages"] == final_messages(second)

    stopped = report["stopped"]
    assert stopped["stopped"] and custom(stopped, "tool_progress")
    assert report["stopped_run"]["status"] == "interrupted"
    after = report["state_after_stop"]["values"]["messages"]
    human = max(i for i, m in enumerate(after) if m["type"] == "human")
    call, *rest = after[human + 1 :]
    assert call["tool_calls"][0]["name"] == "count_primes"
    assert [(m["type"], m["status"], m["tool_call_id"]) for m in rest] in (
        [], [("tool", "error", call["tool_calls"][0]["id"])]
    ), (
        "the stop came during the tool: no result and no answer; langgraph dev leaves the call "
        "unanswered, agent-ng answers it \"cancelled\" (docs/guarantees.md, stop keeps what the user saw)"
    )
    assert report["join"]["messages"] == after, "join answers the thread as the stop left it"

    assert report["replay"] == [{"event": e["event"], "id": e["id"]} for e in first["events"]], (
        "a finished resumable run replays from its start"
    )
