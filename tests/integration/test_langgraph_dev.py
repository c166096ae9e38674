"""``langgraph dev`` serves ``langgraph.json``'s graph: tokens and tool progress reach a
``langgraph_sdk`` client, and a thread goes on across runs.

The server is the real ``langgraph dev`` (``langgraph-cli[inmem]``) in a subprocess on a free
loopback port, run from a scratch directory (it writes ``.langgraph_api/`` there) with the
offline model; it is stopped in teardown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

from tests.helpers.paths import REPO
from tests.helpers.ports import free_port

STARTUP_GUARD_S = 60
RUN_GUARD_S = 30
QUESTION = "what is 17*23 and how many primes are below 200000?"
MODEL_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENT_OPENAI_API_KEY", "AGENT_OPENAI_BASE_URL")


@pytest.fixture
def langgraph_dev(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    env |= {
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "AGENT_CHECKPOINT_URL": "memory://",
    }
    log = (tmp_path / "langgraph-dev.log").open("w")
    command = [
        str(Path(sys.executable).parent / "langgraph"),
        "dev",
        "--no-browser",
        "--no-reload",
        "--port",
        str(port),
        "--config",
        str(REPO / "langgraph.json"),
    ]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_GUARD_S
        while not ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"langgraph dev did not start:\n{(tmp_path / 'langgraph-dev.log').read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ok", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def stream_run(client, thread_id: str, text: str) -> list:
    async with asyncio.timeout(RUN_GUARD_S):
        return [
            part
            async for part in client.runs.stream(
                thread_id,
                "agent",
                input={"messages": [{"role": "user", "content": text}]},
                stream_mode=["messages-tuple", "custom", "updates"],
            )
        ]


def answer_tokens(parts: list) -> list[str]:
    return [
        chunk["content"]
        for part in parts
        if part.event == "messages"
        for chunk, metadata in [part.data]
        if metadata.get("langgraph_node") == "llm"
        and chunk["type"] == "AIMessageChunk"
        and chunk["content"]
    ]


async def test_a_thread_streams_tokens_and_tool_progress_and_continues_in_a_second_run(
    langgraph_dev,
):
    client = get_client(url=langgraph_dev)
    thread = await client.threads.create()

    first = await stream_run(client, thread["thread_id"], QUESTION)

    tokens = answer_tokens(first)
    assert len(tokens) > 5, "the answer arrives as many token chunks"
    assert "".join(tokens) == "17*23 = 391. There are 17,984 primes below 200,000."
    custom = [p.data for p in first if p.event == "custom"]
    progress = [c for c in custom if c.get("agent_ng") == "tool_progress"]
    assert len(progress) >= 10 and {c["name"] for c in progress} == {"count_primes"}
    assert progress[-1]["progress"] == 1.0
    assert [c["progress"] for c in progress] == sorted(c["progress"] for c in progress)
    assert {c["name"] for c in custom if c.get("agent_ng") == "tool_complete"} == {
        "calculator",
        "count_primes",
    }
    updated = [node for p in first if p.event == "updates" for node in p.data]
    assert updated.count("tools") == 2 and updated.count("llm") == 2

    second = await stream_run(client, thread["thread_id"], "what did I ask before?")

    assert "".join(answer_tokens(second)) == f'Earlier you asked: "{QUESTION}".'
    state = await client.threads.get_state(thread["thread_id"])
    roles = [m["type"] for m in state["values"]["messages"]]
    assert roles == ["human", "ai", "tool", "tool", "ai", "human", "ai"]
