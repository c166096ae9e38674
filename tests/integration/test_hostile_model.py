"""Hostile models against the real ``agent-ng serve`` and ``agent-ng ask``: one that streams
faster than anyone reads, one that never answers, one that stalls mid-answer, one that gives
two tool calls one id.

Each case asserts its answer and that ``/healthz`` answered within its budget while it ran.
A stop is timed from the moment it is asked for to the run's settled end; what the thread
stores afterwards is compared with what the client was shown. The fast model streams from a
process of its own, so that sending flat out it does not take the GIL from this process's probe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import httpx
import pytest

from tests.helpers.hostile import MODEL_ENV, HealthWatch, Server, agent_serve, openai_server
from tests.helpers.openai_server import Reply, ScriptedOpenAI, running_server
from tests.helpers.sse import Frame, events

WORDS = 60_000
"""A long answer, streamed as one chunk per word as fast as the connection takes it."""
LONG_ANSWER = " ".join(f"w{i}" for i in range(WORDS))
STEADY_WORDS = 6_000
"""An answer long enough that a model streaming flat out held the server's loop ~200 ms at a time."""
SEEN_BEFORE_STOP = 20
"""Content events the client reads before it stops the run."""
STOP_BUDGET_S = 1.0
"""How long a stop may take to end the run (18 s and more for this answer before the fix)."""
MODEL_TIMEOUT_S = 0.5
TIMEOUT_MARGIN_S = 2.0
"""What a silent model's run may take past ``AGENT_MODEL_TIMEOUT_S`` to end."""
CLI_START_S = 10.0
"""What ``agent-ng ask`` may take to start (imports, stores) on a loaded machine."""
GUARD_S = 30.0
"""Bound on any wait that would hang if the claim under test were false."""


def serve_texts(texts: list[str], urls: multiprocessing.Queue, stop: ProcessEvent) -> None:
    """The child's part of ``model_process``: serve ``texts`` until told to stop."""
    with running_server(ScriptedOpenAI([Reply(text=text) for text in texts])) as url:
        urls.put(url)
        stop.wait()


@contextmanager
def model_process(*texts: str) -> Iterator[str]:
    """A scripted model answering ``texts`` in a process of its own; yields its base URL."""
    context = multiprocessing.get_context("spawn")
    urls, stop = context.Queue(), context.Event()
    child = context.Process(target=serve_texts, args=(list(texts), urls, stop), daemon=True)
    child.start()
    try:
        yield urls.get(timeout=GUARD_S)
    finally:
        stop.set()
        child.join(GUARD_S)
        if child.is_alive():
            child.kill()


@asynccontextmanager
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``server`` whose whole use is bounded (keep-alive pings keep a read alive)."""
    async with asyncio.timeout(GUARD_S), httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as http:
        yield http


async def read_until(frames: AsyncIterator[Frame], count: int, seen: list[str]) -> Frame:
    """Read events, noting the content text in ``seen``, until ``count`` contents or ``run_end``."""
    async for frame in frames:
        if frame.event == "content":
            seen.append(frame.data["text"])
            if len(seen) == count:
                return frame
        if frame.event == "run_end":
            return frame
    raise AssertionError("the stream ended without run_end")


async def answer_of(http: httpx.AsyncClient, thread: str) -> tuple[dict, list[dict]]:
    """The thread's state and its assistant messages."""
    state = (await http.get(f"/threads/{thread}")).json()
    return state, [m for m in state["messages"] if m["role"] == "assistant"]


async def ask(http: httpx.AsyncClient, thread: str, question: str) -> tuple[list[str], Frame]:
    """Ask on a stream and read it to its end: the content texts and ``run_end``."""
    seen: list[str] = []
    async with http.stream("POST", f"/threads/{thread}/runs/stream", json={"input": question}) as r:
        end = await read_until(events(r), -1, seen)
    return seen, end


async def test_a_fast_model_streaming_a_long_answer_leaves_the_server_responsive(tmp_path):
    answer = " ".join(f"w{i}" for i in range(STEADY_WORDS))
    with (
        model_process(answer) as model_url,
        agent_serve(tmp_path, model_url=model_url) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as http:
            seen, end = await ask(http, "t", "go")

    assert end.data["status"] == "done" and "".join(seen) == answer
    health.assert_responsive()


async def test_cancel_ends_a_fast_streaming_model_within_a_second_and_keeps_what_was_shown(tmp_path):
    with (
        model_process(LONG_ANSWER) as model_url,
        agent_serve(tmp_path, model_url=model_url) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as http:
            seen: list[str] = []
            async with http.stream("POST", "/threads/t/runs/stream", json={"input": "go"}) as r:
                frames = events(r)
                run_id = (await anext(frames)).data["run_id"]
                await read_until(frames, SEEN_BEFORE_STOP, seen)
                asked = time.perf_counter()
                cancelled = await http.post(f"/threads/t/runs/{run_id}/cancel")
                took = time.perf_counter() - asked
                end = await read_until(frames, -1, seen)
            state, answers = await answer_of(http, "t")

    assert cancelled.status_code == 200, cancelled.text
    assert took < STOP_BUDGET_S, f"the cancel took {took:.2f} s"
    assert end.event == "run_end" and end.data["status"] == "cancelled"
    assert state["next"] == [] and len(answers) == 1
    stored, shown = answers[0]["content"], "".join(seen)
    assert LONG_ANSWER.startswith(stored) and len(stored) < len(LONG_ANSWER) // 100
    assert stored == shown, "the thread keeps exactly the text the client was shown"
    health.assert_responsive()


async def test_a_client_that_goes_away_ends_a_fast_streaming_model_within_a_second(tmp_path):
    with (
        model_process(LONG_ANSWER, "still here") as model_url,
        agent_serve(tmp_path, model_url=model_url) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as http:
            seen: list[str] = []
            async with http.stream("POST", "/threads/t/runs/stream", json={"input": "go"}) as r:
                await read_until(events(r), SEEN_BEFORE_STOP, seen)
                left = time.perf_counter()
            settled_after = await settled(http, "t", left)
            state, answers = await answer_of(http, "t")
            again, end = await ask(http, "t", "and now?")

    assert settled_after < STOP_BUDGET_S, f"the run settled {settled_after:.2f} s after the client left"
    stored = answers[0]["content"]
    assert LONG_ANSWER.startswith(stored) and len(stored) < len(LONG_ANSWER) // 100
    assert stored.startswith("".join(seen))
    assert end.data["status"] == "done" and "".join(again) == "still here"
    health.assert_responsive()


async def settled(http: httpx.AsyncClient, thread: str, since: float) -> float:
    """Seconds from ``since`` until the thread holds a settled answer (nothing left to run)."""
    deadline = since + GUARD_S
    while time.perf_counter() < deadline:
        state, answers = await answer_of(http, thread)
        if answers and state["next"] == []:
            return time.perf_counter() - since
    raise AssertionError(f"thread {thread} did not settle within {GUARD_S} s")


SILENCES = {
    "no-answer-at-all": lambda release: Reply(text="too late", release=release, silent=True),
    "headers-then-nothing": lambda release: Reply(text="too late", release=release, hold_after=0),
    "stalls-mid-answer": lambda release: Reply(text="one two three four five", release=release, hold_after=3),
}


@pytest.mark.parametrize("background", [False, True], ids=["streamed", "background"])
@pytest.mark.parametrize("silence", list(SILENCES))
async def test_a_silent_model_ends_the_run_with_a_timeout_error_and_the_thread_goes_on(
    tmp_path, silence, background
):
    release = threading.Event()
    replies = [SILENCES[silence](release), Reply(text="fine now")]
    env = {"AGENT_MODEL_TIMEOUT_S": str(MODEL_TIMEOUT_S)}
    with (
        openai_server(replies) as model_url,
        agent_serve(tmp_path, model_url=model_url, env=env) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as http:
            started = time.perf_counter()
            if background:
                run_id = (await http.post("/threads/t/runs", json={"input": "hello?"})).json()["run_id"]
                async with http.stream("GET", f"/threads/t/runs/{run_id}/stream") as r:
                    end = await read_until(events(r), -1, [])
            else:
                _, end = await ask(http, "t", "hello?")
            took = time.perf_counter() - started
            after, _ = await answer_of(http, "t")
            again, next_end = await ask(http, "t", "and now?")

    assert end.data["status"] == "error", end.data
    error = end.data["error"]
    assert "'test'" in error and f"{MODEL_TIMEOUT_S:g} s" in error and "AGENT_MODEL_TIMEOUT_S" in error
    assert "\n" not in error
    assert took < MODEL_TIMEOUT_S + TIMEOUT_MARGIN_S, f"the run ended after {took:.2f} s"
    assert after["next"] == [], "the thread is settled at once"
    assert next_end.data["status"] == "done" and "".join(again) == "fine now"
    health.assert_responsive()


def test_agent_ng_ask_against_a_silent_model_exits_with_one_clear_error_line(tmp_path):
    release = threading.Event()
    replies = [Reply(text="too late", release=release, silent=True), Reply(text="fine now")]
    with running_server(ScriptedOpenAI(replies)) as url:
        env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
        env |= {
            "OPENAI_BASE_URL": url,
            "OPENAI_API_KEY": "test",
            "AGENT_MODEL": "test",
            "AGENT_MODEL_TIMEOUT_S": str(MODEL_TIMEOUT_S),
            "AGENT_CHECKPOINT_URL": f"sqlite:///{tmp_path / 'threads.db'}",
            "AGENT_CACHE_URL": f"sqlite:///{tmp_path / 'tools.db'}",
        }
        command = [str(Path(sys.executable).parent / "agent-ng"), "ask", "--thread", "t"]
        started = time.perf_counter()
        done = subprocess.run([*command, "hello?"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=GUARD_S)
        took = time.perf_counter() - started
        again = subprocess.run([*command, "and now?"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=GUARD_S)

    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "'test'" in errors[0] and f"{MODEL_TIMEOUT_S:g} s" in errors[0] and "AGENT_MODEL_TIMEOUT_S" in errors[0]
    assert "Traceback" not in done.stderr
    assert took < CLI_START_S + MODEL_TIMEOUT_S + TIMEOUT_MARGIN_S, f"agent-ng ask took {took:.1f} s"
    assert again.returncode == 0 and "fine now" in again.stdout, again.stderr


async def test_two_tool_calls_with_one_id_both_run_and_both_results_are_kept(tmp_path):
    script = ScriptedOpenAI(
        [
            Reply(tool_calls=[("calculator", {"expression": "1+1"}), ("calculator", {"expression": "2*3"})], ids=["dup", "dup"]),
            Reply(text="2 and 6"),
            Reply(tool_calls=[("calculator", {"expression": "7*7"})], ids=["dup"]),
            Reply(text="49"),
        ]
    )
    with (
        running_server(script) as model_url,
        agent_serve(tmp_path, model_url=model_url) as server,
        HealthWatch(server.url) as health,
    ):
        async with client(server) as http:
            first, end = await ask(http, "t", "1+1 and 2*3?")
            second, next_end = await ask(http, "t", "and 7*7?")
            state, answers = await answer_of(http, "t")

    assert end.data["status"] == next_end.data["status"] == "done"
    calls = [call for answer in answers for call in answer["tool_calls"]]
    ids = [call["id"] for call in calls]
    assert len(calls) == 3 and len(set(ids)) == 3, ids
    results = {m["tool_call_id"]: m["content"] for m in state["messages"] if m["role"] == "tool"}
    assert results == dict(zip(ids, ["2", "6", "49"], strict=True))
    sent = [m for m in script.requests[1]["messages"] if m["role"] in ("assistant", "tool")]
    assert [c["id"] for c in sent[0]["tool_calls"]] == ids[:2]
    assert [m["tool_call_id"] for m in sent[1:]] == ids[:2]
    health.assert_responsive()
