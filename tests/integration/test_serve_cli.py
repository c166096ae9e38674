"""``agent-ng serve`` starts the service with the offline model and the page, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers.hostile import MODEL_ENV
from tests.helpers.ports import free_port

STARTUP_GUARD_S = 30


def test_agent_ng_serve_answers_a_run_with_two_tools_and_serves_the_page(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    env["AGENT_CHECKPOINT_URL"] = f"sqlite:///{tmp_path / 'threads.db'}"
    env["AGENT_CACHE_URL"] = f"sqlite:///{tmp_path / 'tools.db'}"
    env["AGENT_GROUP_LIMITS"] = '{"network": 3}'
    command = [str(Path(sys.executable).parent / "agent-ng"), "serve", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_GUARD_S
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "agent-ng serve did not start"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=STARTUP_GUARD_S) as c:
            with c.stream(
                "POST",
                "/threads/cli/runs/stream",
                json={"input": "what is 17*23 and how many primes are below 200000?"},
            ) as r:
                names = [line[6:].strip() for line in r.iter_lines() if line.startswith("event:")]
            page = c.get("/")
            threads = c.get("/threads").json()
            metrics = c.get("/metrics").text
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(STARTUP_GUARD_S)

    assert names[0] == "run_start" and names[-1] == "run_end"
    assert names.count("tool_start") == 2 and names.count("tool_complete") == 2
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert [t["thread_id"] for t in threads] == ["cli"]
    assert (tmp_path / "threads.db").exists()
    assert 'agent_ng_tool_calls_total{tool="calculator"} 1.0' in metrics
    assert 'agent_ng_tool_calls_total{tool="count_primes"} 1.0' in metrics
    assert 'agent_ng_group_limit{group="network"} 3.0' in metrics
