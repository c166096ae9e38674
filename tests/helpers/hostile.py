"""The hostile suite's harness: the real ``agent-ng serve`` in its own process, a scripted model
that makes it call any tool with any arguments, and a watch on ``/healthz`` while a case runs.

The server is a separate process so that whatever a case does to it (a regex that holds the
GIL, a body that fills its memory) cannot slow the probe, and its memory is its own to read; the
probe is a process of its own too, so that the test process's threads cannot slow it either. The model is ``ChatOpenAI`` against ``ScriptedOpenAI``, so a case scripts the exact tool
call an attacker's prompt would get out of a real model.

    with openai_server([Reply(tool_calls=[("file_search", {"pattern": "^(a+)+$"})]),
                        Reply(text="done")]) as model_url, \\
         agent_serve(tmp_path, model_url=model_url) as server, HealthWatch(server.url) as health:
        ...
    health.assert_responsive()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers.openai_server import Reply, ScriptedOpenAI, running_server
from tests.helpers.ports import free_port

STARTUP_GUARD_S = 30
HEALTH_BUDGET_S = 0.1
"""How long ``/healthz`` may take while a hostile case runs (the issue's bound)."""
HEALTH_EVERY_S = 0.02
MODEL_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AGENT_OPENAI_API_KEY",
    "AGENT_OPENAI_BASE_URL",
    "AGENT_API_KEY",
    "AGENT_MODEL",
)


@dataclass
class Server:
    """A running ``agent-ng serve``: its URL, process and the files it keeps."""

    url: str
    process: subprocess.Popen
    home: Path

    def rss_bytes(self) -> int:
        """The server's resident memory now (Linux ``/proc``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS for the server")


@contextmanager
def openai_server(replies: Sequence[Reply]) -> Iterator[str]:
    """A scripted OpenAI-compatible model for the server; yields its base URL."""
    with running_server(ScriptedOpenAI(list(replies))) as base_url:
        yield base_url


@contextmanager
def agent_serve(
    home: Path, *, model_url: str | None = None, env: Mapping[str, str] = {}
) -> Iterator[Server]:
    """``agent-ng serve`` on a free port with its files under ``home``; stopped (SIGINT) after.

    ``model_url`` points it at a scripted model (else the offline one); ``env`` adds ``AGENT_*``
    settings. The server's stderr is kept in ``home/serve.log`` for a failing test to show.
    """
    port = free_port()
    full = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    full |= {
        "AGENT_CHECKPOINT_URL": f"sqlite:///{home / 'threads.db'}",
        "AGENT_CACHE_URL": f"sqlite:///{home / 'tools.db'}",
        "AGENT_DATA_DIR": str(home),
    }
    if model_url:
        full |= {"OPENAI_BASE_URL": model_url, "OPENAI_API_KEY": "test", "AGENT_MODEL": "test"}
    full |= env
    log = (home / "serve.log").open("wb")
    command = [str(Path(sys.executable).parent / "agent-ng"), "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=home, env=full, stdout=log, stderr=log)
    server = Server(f"http://127.0.0.1:{port}", process, home)
    try:
        wait_until_up(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STARTUP_GUARD_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_GUARD_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"agent-ng serve exited: {server_log(server)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"agent-ng serve did not start: {server_log(server)}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)


def server_log(server: Server) -> str:
    return (server.home / "serve.log").read_text(errors="replace")[-4000:]


PROBE = """
import http.client, json, sys, time, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
every, latencies, failures = float(sys.argv[2]), [], []
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
while True:
    started = time.perf_counter()
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(f"/healthz answered {response.status}")
    except (OSError, http.client.HTTPException) as e:
        failures.append(f"/healthz failed: {e!r}")
        conn.close()
    latencies.append(time.perf_counter() - started)
    if len(latencies) == 1:
        print("ready", flush=True)
    if sys.stdin in __import__("select").select([sys.stdin], [], [], every)[0]:
        break
print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)
"""
"""The prober: a process of its own, so that nothing the test process does (a scripted model's
thread, the test's own client) can hold the GIL it needs and make the server look slow."""


@dataclass
class HealthWatch:
    """Asks ``/healthz`` every 20 ms, from a process of its own, while a case runs.

    Entering waits for the first answer, so a case that ends at once still has a probe to
    judge. A probe that has not answered when the next is due is still counted by the time it
    took, so a frozen server shows as one long probe, not as missing ones.
    """

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _prober: subprocess.Popen | None = None

    def __enter__(self) -> HealthWatch:
        self._prober = subprocess.Popen(
            [sys.executable, "-c", PROBE, self.url, str(HEALTH_EVERY_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        first = self._prober.stdout.readline()
        if first.strip() != "ready":
            self._prober.kill()
            raise RuntimeError(f"the /healthz prober did not start: {first!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._prober is not None
        out, _ = self._prober.communicate("stop\n", timeout=STARTUP_GUARD_S)
        report = json.loads(out.strip().splitlines()[-1])
        self.latencies, self.failures = report["latencies"], report["failures"]

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=0.0)

    def assert_responsive(self, budget_s: float = HEALTH_BUDGET_S) -> None:
        """Every probe answered 200 within ``budget_s``."""
        assert self.latencies, "the case ended before /healthz was asked once"
        assert not self.failures, self.failures[:3]
        assert self.worst_s < budget_s, (
            f"/healthz took {self.worst_s * 1000:.0f} ms (budget {budget_s * 1000:.0f} ms) "
            f"over {len(self.latencies)} probes"
        )
