"""The real ``langgraph dev`` (``langgraph-cli[inmem]``) on ``langgraph.json``, for as long as a block runs.

    with langgraph_dev(tmp_path, AGENT_CHECKPOINT_URL="sqlite:///...") as url:
        client = get_client(url=url)

It runs in a subprocess on a free loopback port, from ``cwd`` (where it keeps its own records,
``.langgraph_api/``), with the offline model (no ``OPENAI_*`` or other ``AGENT_*`` variables
than those given), and is stopped with SIGTERM when the block ends, so it writes those records
out as a person's Ctrl-C would; its log is appended to ``cwd/langgraph-dev.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers.paths import REPO
from tests.helpers.ports import free_port

STARTUP_GUARD_S = 60
"""A start takes 1-3 s; the guard only bounds a server that never answers."""
STOP_GUARD_S = 10


@contextmanager
def langgraph_dev(cwd: Path, **env_vars: str) -> Iterator[str]:
    """The server's base URL while it runs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_"))}
    env |= {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false", **env_vars}
    log_path = cwd / "langgraph-dev.log"
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
    with log_path.open("a") as log:
        server = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_GUARD_S
            while not ready(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"langgraph dev did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(STOP_GUARD_S)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def ready(url: str) -> bool:
    """Whether the server answers its health route."""
    try:
        return httpx.get(f"{url}/ok", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
