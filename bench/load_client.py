"""The load client, a process of its own: K streams at once against a server, timed per token.

    python -m agent_ng.bench.load_client ours|langgraph URL K TOKENS   # one JSON object on stdout

It is not the bench process (and not the server's), so its CPU is its own and is reported:
at high K a client on the same 2 cores can be what limits the numbers. To cost little per
token it speaks HTTP/1.1 itself over asyncio streams (one connection per stream, chunked
body, SSE lines), not through httpx. Per stream it records the time to the response headers,
to the first and to the last token, and the gaps between tokens, all from the moment it
began to connect.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from time import perf_counter
from urllib.parse import urlsplit

GUARD_S = 180.0
IsToken = Callable[[bytes, bytes], bool]


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


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in lines if line)
    )
    return int(status_line.split()[1]), headers


async def body_chunks(reader: asyncio.StreamReader, headers: dict[bytes, bytes]):
    """The body as it arrives: decoded from chunked transfer encoding when it is chunked."""
    if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
        while data := await reader.read(65536):
            yield data
        return
    while size := int((await reader.readline()).split(b";")[0], 16):
        yield (await reader.readexactly(size + 2))[:-2]


async def one_stream(url: str, path: str, body: dict, is_token: IsToken, tokens: int) -> Stream:
    parts = urlsplit(url)
    times: list[float] = []
    writer = None
    start = perf_counter()
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(request("POST", parts.netloc, path, body))
        status, headers = await read_head(reader)
        headers_at = perf_counter()
        if status != 200:
            return Stream(error=f"HTTP {status}")
        event, pending = b"", b""
        async for chunk in body_chunks(reader, headers):
            now = perf_counter()
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                line = line.rstrip(b"\r")
                if line.startswith(b"event:"):
                    event = line[6:].strip()
                elif line.startswith(b"data:") and is_token(event, line[5:]):
                    times.append(now)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return Stream(error=type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
    if len(times) != tokens:
        return Stream(error=f"{len(times)} of {tokens} tokens")
    gaps = tuple(b - a for a, b in zip(times, times[1:], strict=False))
    return Stream(
        headers_s=headers_at - start, ttft_s=times[0] - start, last_s=times[-1] - start, gaps_s=gaps
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
    json.dump(asyncio.run(main(protocol, url, k, tokens)), sys.stdout)
