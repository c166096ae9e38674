"""The load client, a process of its own: K streams at once against a server, timed per token.

    python -m agent_ng.bench.load_client ours|langgraph URL K TOKENS   # one JSON object on stdout

It is not the bench process (and not the server's), so its CPU is its own and is reported:
at high K a client on the same 2 cores can be what limits the numbers. To cost little per
token it speaks HTTP/1.1 itself (one connection per stream, chunked body, SSE lines), not
through httpx, parsing in the connection's protocol (no task woken per chunk), on uvloop when it
is installed: a third of the CPU per token of the asyncio streams it read before. Per stream
it records the time to the response headers, to the first and to the last token, and the gaps
between tokens, all from the moment it began to connect.

- ``ours``: ``POST /threads/{id}/runs/stream`` on ``agent-ng serve``; a token is a ``content``
  event.
- ``langgraph``: the same graph under ``langgraph dev``: a thread is made first (not timed),
  then ``POST /threads/{id}/runs/stream`` with the stream modes a UI reads (``messages-tuple``,
  ``custom``, ``updates``); a token is a ``messages`` event whose chunk has content.

A stream is an error when its status is not 200, its connection fails, or it ends without all
``TOKENS`` tokens.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any, TypeVar
from urllib.parse import urlsplit

GUARD_S = 180.0
IsToken = Callable[[bytes, bytes], bool]
T = TypeVar("T")


@dataclass
class Stream:
    error: str = ""
    headers_s: float | None = None
    ttft_s: float | None = None
    last_s: float | None = None
    """To the last token: the whole answer as the reader got it."""
    gaps_s: tuple[float, ...] = ()


def request(method: str, host: str, path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


class _Reader(asyncio.Protocol):
    """One response read as it arrives, with no task woken per chunk: the head, the body
    (de-chunked when chunked), its SSE lines, the time each token's data line arrived."""

    def __init__(self, is_token: IsToken) -> None:
        self.is_token = is_token
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.headers_at: float | None = None
        self.times: list[float] = []
        self._buffer = b""
        self._chunked = False
        self._left = 0
        """Bytes of the current chunk not yet read (with its closing CRLF)."""
        self._pending = b""
        self._event = b""

    def data_received(self, data: bytes) -> None:
        if self.done.done():  # the last chunk's trailer, or after a bad size line
            return
        now = perf_counter()
        self._buffer += data
        if self.headers_at is None:
            head, found, rest = self._buffer.partition(b"\r\n\r\n")
            if not found:
                return
            status_line, *lines = head.split(b"\r\n")
            self.status, self.headers_at, self._buffer = int(status_line.split()[1]), now, rest
            self._chunked = any(
                line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower() for line in lines
            )
        if self._chunked:
            self._body(self._dechunked(), now)
        else:
            self._body(self._buffer, now)
            self._buffer = b""

    def _dechunked(self) -> bytes:
        out = []
        buffer = self._buffer
        while buffer:
            if self._left == 0:
                size_line, found, rest = buffer.partition(b"\r\n")
                if not found:
                    break
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self._finish()
                    buffer = b""
                    break
                buffer, self._left = rest, size + 2
            piece, buffer = buffer[: self._left], buffer[self._left :]
            self._left -= len(piece)
            out.append(piece if self._left >= 2 else piece[: len(piece) - (2 - self._left)])
        self._buffer = buffer
        return b"".join(out)

    def _body(self, data: bytes, now: float) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"event:"):
                self._event = line[6:].strip()
            elif line.startswith(b"data:") and self.is_token(self._event, line[5:]):
                self.times.append(now)

    def _finish(self, error: BaseException | None = None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None and self.headers_at is None:
            exc = ConnectionResetError("closed before the response's head")
        self._finish(exc)


async def one_stream(url: str, path: str, body: dict, is_token: IsToken, tokens: int) -> Stream:
    parts = urlsplit(url)
    reader = _Reader(is_token)
    transport = None
    start = perf_counter()
    try:
        transport, _ = await asyncio.get_running_loop().create_connection(
            lambda: reader, parts.hostname, parts.port
        )
        transport.write(request("POST", parts.netloc, path, body))
        await reader.done
    except (OSError, ValueError, IndexError) as exc:
        return Stream(error=type(exc).__name__)
    finally:
        if transport is not None:
            transport.close()
    if reader.status != 200:
        return Stream(error=f"HTTP {reader.status}")
    times = reader.times
    if len(times) != tokens:
        return Stream(error=f"{len(times)} of {tokens} tokens")
    gaps = tuple(b - a for a, b in zip(times, times[1:], strict=False))
    return Stream(
        headers_s=reader.headers_at - start, ttft_s=times[0] - start, last_s=times[-1] - start, gaps_s=gaps
    )


def ours_token(event: bytes, data: bytes) -> bool:
    return event == b"content"


def langgraph_token(event: bytes, data: bytes) -> bool:
    if event != b"messages":
        return False
    chunk, _metadata = json.loads(data)
    return chunk.get("type") == "AIMessageChunk" and bool(chunk.get("content"))


def root(url: str) -> str:
    """The path the API sits under (``/langgraph`` in ``http://host:8000/langgraph``; else nothing)."""
    return urlsplit(url).path.rstrip("/")


async def ours(url: str, k: int, tokens: int) -> list[Stream]:
    return await asyncio.gather(*(
        one_stream(url, f"{root(url)}/threads/{uuid.uuid4()}/runs/stream", {"input": "go"}, ours_token, tokens)
        for _ in range(k)
    ))


async def langgraph(url: str, k: int, tokens: int) -> list[Stream]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=GUARD_S) as client:
        threads = [(await client.post("/threads", json={})).json()["thread_id"] for _ in range(k)]
    body = {
        "assistant_id": "agent",
        "input": {"messages": [{"role": "user", "content": "go"}]},
        "stream_mode": ["messages-tuple", "custom", "updates"],
    }
    return await asyncio.gather(*(
        one_stream(url, f"{root(url)}/threads/{thread}/runs/stream", body, langgraph_token, tokens)
        for thread in threads
    ))


def on_fast_loop(main: Coroutine[Any, Any, T]) -> T:
    """``main`` on uvloop when it is installed, as uvicorn serves on it: the client's share of the
    cores it shares with the server is then about two thirds of asyncio's loop's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def main(protocol: str, url: str, k: int, tokens: int) -> dict:
    cpu0, wall0 = time.process_time(), perf_counter()
    load = {"ours": ours, "langgraph": langgraph}[protocol]
    async with asyncio.timeout(GUARD_S):
        streams = await load(url, k, tokens)
    return {
        "streams": [asdict(s) for s in streams],
        "client_cpu_s": time.process_time() - cpu0,
        "client_wall_s": perf_counter() - wall0,
    }


if __name__ == "__main__":
    protocol, url, k, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    json.dump(on_fast_loop(main(protocol, url, k, tokens)), sys.stdout)
