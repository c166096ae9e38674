"""Hostile tool calls against the real ``agent-ng serve``: what a tool may do to the server.

A scripted model makes the server call a built-in tool with the arguments an attacker's prompt
would get out of a real model. Each case asserts the tool's answer (the tool message stored in
the thread, or the stream's ``tool_error``), that ``/healthz`` answered within its budget while
the tool ran, and, for the bodies that inflate, that the server's peak memory stayed small.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from tests.helpers.hostile import HealthWatch, Server, agent_serve, openai_server
from tests.helpers.openai_server import Reply, running_server
from tests.helpers.sse import events

try:
    from compression import zstd
except ImportError:
    from backports import zstd

MB = 1 << 20
GUARD_S = 60
ANSWER_BUDGET_S = 5.0
"""How long a hostile call may take to be answered (the catastrophic regex froze it ~10 s here, 47 s in the issue)."""
RSS_BUDGET = 32 * MB
"""How much the server's peak memory may grow while a bomb is fetched (a 1 GiB zstd bomb took it past 1 GB)."""
INFLATED = 1 << 30
"""What each bomb inflates to."""
MAX_BYTES = 1_000_000
SECRET = "s3cret-value"


def peak_rss(server: Server) -> int:
    """The server's peak resident memory so far (``VmHWM``)."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM for the server")


async def call_tool(server: Server, thread: str = "t1") -> tuple[dict[str, Any], dict[str, Any] | None, float]:
    """Ask once (the scripted model calls the tool); the tool's stored message, the stream's
    ``tool_error`` if any, and how long the run took."""
    started = time.perf_counter()
    error = None
    async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client, asyncio.timeout(GUARD_S):
        async with client.stream("POST", f"/threads/{thread}/runs/stream", json={"input": "go"}) as r:
            assert r.status_code == 200, await r.aread()
            names = []
            async for frame in events(r):
                names.append(frame.event)
                if frame.event == "tool_error":
                    error = frame.data
        took = time.perf_counter() - started
        assert names[-1] == "run_end", names
        messages = (await client.get(f"/threads/{thread}")).json()["messages"]
    return next(m for m in messages if m["role"] == "tool"), error, took


async def run_case(tmp_path: Path, tool: str, args: dict, env: Mapping[str, str] = {}):
    """The tool's message, its ``tool_error``, the run's time, the server's peak-memory growth
    and the health watch, for one call of ``tool`` with ``args``."""
    script = [Reply(tool_calls=[(tool, args)]), Reply(text="done")]
    with openai_server(script) as model_url, agent_serve(tmp_path, model_url=model_url, env=env) as server:
        before = server.rss_bytes()
        with HealthWatch(server.url) as health:
            message, error, took = await call_tool(server)
        grew = peak_rss(server) - before
    return message, error, took, grew, health


# file_search: a catastrophic regex, patterns the engine cannot run, hidden files and escapes.


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """A search root with a line that makes a backtracking regex take seconds, hidden files holding
    a secret, and a secret beside the root; the settings that point ``file_search`` at it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "src").mkdir(parents=True)
    (root / ".git").mkdir()
    outside.mkdir()
    (root / "src" / "line.txt").write_text("a" * 28 + "!\n")
    (root / ".env").write_text(f"API_KEY={SECRET}\n")
    (root / ".git" / "config").write_text(f"token = {SECRET}\n")
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    return {"AGENT_FILES_ROOT": str(root)}


async def test_a_catastrophic_regex_does_not_freeze_the_server(tmp_path, files):
    message, error, took, _, health = await run_case(
        tmp_path, "file_search", {"pattern": "^(a+)+$", "glob": "**/*.txt"}, files
    )
    assert error is None and message["content"].startswith("0 matching lines in 0 files (1 text files searched)")
    assert took < ANSWER_BUDGET_S, f"answered after {took:.1f} s"
    health.assert_responsive()


async def test_a_pattern_the_linear_engine_cannot_run_is_refused_with_a_reason(tmp_path, files):
    message, error, _, _, health = await run_case(tmp_path, "file_search", {"pattern": r"(a+)\1!"}, files)
    assert error is not None and message["status"] == "error"
    assert "not supported by the linear-time regex engine" in error["error"]
    assert "backreferences" in error["error"] and "literal=true" in error["error"]
    health.assert_responsive()


@pytest.mark.parametrize("glob", [".env", ".git/config", "**/.*", r"\.env", r"\.git/*"])
async def test_hidden_files_are_never_read_whatever_the_glob(tmp_path, files, glob):
    message, _, _, _, health = await run_case(tmp_path, "file_search", {"pattern": "=", "glob": glob}, files)
    assert SECRET not in message["content"]
    assert "hidden" in message["content"], message["content"]
    health.assert_responsive()


@pytest.mark.parametrize("glob", [r"\.\./outside/*", r"src/\.\./\.\./outside/*", r".\./outside/secret.txt"])
async def test_an_escaped_parent_in_a_glob_reads_and_names_nothing_outside(tmp_path, files, glob):
    message, error, _, _, health = await run_case(tmp_path, "file_search", {"pattern": ".", "glob": glob}, files)
    assert SECRET not in message["content"]
    assert "secret.txt" not in message["content"].replace(repr(glob), "")
    assert error is not None and "leave the search root" in error["error"]
    health.assert_responsive()


# http_fetch: bodies that inflate to far more than the byte limit.


def compressed(encoding: str, size: int) -> bytes:
    """``size`` zero bytes compressed with ``encoding``, made a MiB at a time."""
    compressor = {
        "gzip": lambda: zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16),
        "deflate": lambda: zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS),
        "zstd": zstd.ZstdCompressor,
        "br": lambda: brotli.Compressor(quality=5),
    }[encoding]()
    compress = getattr(compressor, "compress", None) or compressor.process
    finish = getattr(compressor, "flush", None) or compressor.finish
    chunk = bytes(MB)
    return b"".join(compress(chunk) for _ in range(size // MB)) + finish()


BOMB_SIZES = {"zstd": INFLATED, "br": INFLATED, "gzip": INFLATED // 4, "deflate": INFLATED // 4}
"""gzip and deflate cap at ~1,000:1, so theirs are smaller (a 64 KiB chunk still inflates to 64 MiB)."""


@pytest.fixture(scope="module")
def bombs() -> Iterator[str]:
    """A local server whose ``/bomb/<encoding>`` answers a small body that inflates to a lot."""
    bodies = {encoding: compressed(encoding, size) for encoding, size in BOMB_SIZES.items()}
    app = FastAPI()

    @app.get("/bomb/{encoding}")
    async def bomb(encoding: str):
        return Response(
            bodies[encoding], media_type="text/plain", headers={"content-encoding": encoding}
        )

    with running_server(app) as base_url:
        yield base_url.removesuffix("/v1")


@pytest.mark.parametrize("encoding", list(BOMB_SIZES))
async def test_a_compressed_body_is_bounded_as_it_is_decoded(tmp_path, bombs, encoding):
    env = {"AGENT_HTTP_ALLOW": "127.0.0.1", "AGENT_HTTP_MAX_BYTES": str(MAX_BYTES)}
    message, error, took, grew, health = await run_case(
        tmp_path, "http_fetch", {"url": f"{bombs}/bomb/{encoding}"}, env
    )
    assert error is None, error
    assert f"size: {MAX_BYTES:,} bytes (truncated at the byte limit)" in message["content"]
    assert grew < RSS_BUDGET, f"the server's peak memory grew {grew / MB:.0f} MB"
    assert took < ANSWER_BUDGET_S, f"answered after {took:.1f} s"
    health.assert_responsive()


# CPU-heavy tools: refused or stopped at their timeout, never holding the loop.


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("calculator", {"expression": "9**9**9"}),
        ("calculator", {"expression": "(10**3999) * (10**3999) * (10**3999)"}),
        ("count_primes", {"below": 2_000_000_000}),
    ],
    ids=["power-tower", "huge-product", "primes-at-the-bound"],
)
async def test_cpu_heavy_calls_end_by_their_timeout_without_freezing_the_loop(tmp_path, tool, args):
    message, _, took, _, health = await run_case(tmp_path, tool, args, {"AGENT_TOOL_TIMEOUT_S": "1"})
    assert message["status"] == "error", message
    assert took < ANSWER_BUDGET_S, f"answered after {took:.1f} s"
    health.assert_responsive()
