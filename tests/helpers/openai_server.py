"""A local OpenAI-compatible chat server that serves scripted replies, for tests.

Faking ``ChatOpenAI`` (or patching the openai client) only tests our guess at what it does.
This server speaks the real wire protocol instead, so the real ``ChatOpenAI`` -> openai SDK ->
httpx stack runs end to end: Server-Sent Events in OpenAI's ``chat.completion.chunk`` format,
tool calls split into argument fragments that the client must merge by ``index``, and the
usage chunk. Replies are scripted, one per request, and every request body is recorded, so a
test can check both what the model "said" and what the agent sent.

    script = ScriptedOpenAI([Reply(tool_calls=[("calculator", {"expression": "17*23"})]),
                             Reply(text="17*23 is 391.")])
    with running_server(script) as base_url:
        model = ChatOpenAI(base_url=base_url, api_key="test", model="test-model",
                           streaming=True, stream_usage=True, max_retries=0)
        ...
    script.requests  # the request bodies, in order

A reply can stall mid-stream until the test sets a ``threading.Event``, so a test can see
the first tokens arrive before the reply is complete without racing a sleep; with ``silent``
it sends nothing at all, not even the response headers, as a server that accepts the
connection and never answers. A long ``text`` streams as many chunks as it has words, as fast
as the connection takes them; ``ids`` sends the tool calls under the ids a test chooses
(repeated ones, say).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp

ToolCall = tuple[str, dict[str, Any]]
"""A scripted tool call: the tool's name and its arguments."""

ARGUMENT_FRAGMENTS = 3
"""How many pieces each tool call's JSON arguments are streamed in."""

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0

# No pooled keep-alive connections: langchain-openai caches its httpx client per base URL, and
# a connection pooled on one test's event loop fails ("Event loop is closed") when a later
# test reaches the same URL, as it does when the OS hands out the same port again.
_NO_KEEP_ALIVE = {"Connection": "close"}


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer: either ``text`` or ``tool_calls``.

    With ``release`` set, a streamed reply sends its first ``hold_after`` chunks and then
    waits until the event is set before sending the rest (at most all of them, holding back
    only ``[DONE]``); a non-streamed reply waits before answering at all, and so does any
    reply that is ``silent``. ``ids``, one per tool call, replace the default call ids.
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    hold_after: int = 0
    release: threading.Event | None = None
    silent: bool = False
    ids: Sequence[str] = ()

    def __post_init__(self) -> None:
        if bool(self.text) == bool(self.tool_calls):
            raise ValueError("a Reply has either text or tool_calls (exactly one of them)")
        if self.hold_after < 0:
            raise ValueError(f"hold_after must be >= 0, got {self.hold_after}")
        if self.silent and self.release is None:
            raise ValueError("a silent Reply needs the release that ends its silence")
        if self.ids and len(self.ids) != len(self.tool_calls):
            raise ValueError(f"{len(self.ids)} ids for {len(self.tool_calls)} tool calls")


@dataclass(eq=False)
class ScriptedOpenAI:
    """The replies still to give, in order, and every request body received so far."""

    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _pending_releases: list[threading.Event] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def take(self, body: dict[str, Any]) -> tuple[int, Reply | None]:
        """Record ``body``; return its 1-based request number and the next reply (None if out)."""
        with self._lock:
            self.requests.append(body)
            reply = self.replies.pop(0) if self.replies else None
            if reply is not None and reply.release is not None:
                self._pending_releases.append(reply.release)
            return len(self.requests), reply

    def release_all(self) -> None:
        """Let every stalled reply finish; the server does this before it stops."""
        with self._lock:
            for release in self._pending_releases:
                release.set()


@dataclass(frozen=True, slots=True)
class OpenAIServer:
    """A running scripted server: what the ``openai_server`` fixture yields."""

    script: ScriptedOpenAI
    base_url: str


def text_pieces(text: str) -> list[str]:
    """Word-sized deltas: each word with the whitespace after it (leading space goes first)."""
    return re.findall(r"\s*\S+\s*", text) or [text]


def argument_fragments(arguments: str) -> list[str]:
    """Split a JSON arguments string into ``ARGUMENT_FRAGMENTS`` consecutive non-empty pieces."""
    bounds = [len(arguments) * k // ARGUMENT_FRAGMENTS for k in range(ARGUMENT_FRAGMENTS + 1)]
    return [arguments[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def tool_call_id(reply: Reply, request_number: int, index: int) -> str:
    """The reply's own ids, else deterministic ones, so a failing test names the same call on every run."""
    return reply.ids[index] if reply.ids else f"call_{request_number}_{index}"


def text_deltas(text: str) -> list[dict[str, Any]]:
    return [{"content": piece} for piece in text_pieces(text)]


def tool_call_deltas(reply: Reply, request_number: int) -> list[dict[str, Any]]:
    """A header delta per call, then the calls' argument fragments interleaved round-robin."""
    headers = [
        {
            "tool_calls": [
                {
                    "index": index,
                    "id": tool_call_id(reply, request_number, index),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
        for index, (name, _) in enumerate(reply.tool_calls)
    ]
    fragments = [argument_fragments(json.dumps(arguments)) for _, arguments in reply.tool_calls]
    interleaved = [
        {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
        for round_ in itertools.zip_longest(*fragments)
        for index, fragment in enumerate(round_)
        if fragment is not None
    ]
    return headers + interleaved


def reply_deltas(reply: Reply, request_number: int) -> list[dict[str, Any]]:
    """The reply's deltas; the first one also carries the assistant role, as OpenAI's does."""
    if reply.text:
        deltas = text_deltas(reply.text)
    else:
        deltas = tool_call_deltas(reply, request_number)
    first, *rest = deltas
    return [{"role": "assistant", "content": None, **first}, *rest]


def finish_reason(reply: Reply) -> str:
    return "stop" if reply.text else "tool_calls"


def usage(body: dict[str, Any], completion_tokens: int) -> dict[str, int]:
    """Deterministic stand-in token counts: prompt words in, deltas out."""
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_header(request_number: int, body: dict[str, Any]) -> dict[str, Any]:
    """The fields every ``chat.completion`` and ``chat.completion.chunk`` starts with."""
    return {
        "id": f"chatcmpl-scripted-{request_number}",
        "created": int(time.time()),
        "model": body["model"],
        "service_tier": "default",
        "system_fingerprint": "fp_scripted",
    }


def stream_chunks(reply: Reply, request_number: int, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``chat.completion.chunk`` of a streamed reply, usage chunk included if asked for."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    header = {**completion_header(request_number, body), "object": "chat.completion.chunk"}
    if include_usage:
        header["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**header, "choices": [choice]}

    deltas = reply_deltas(reply, request_number)
    chunks = [chunk(delta) for delta in deltas] + [chunk({}, finish_reason(reply))]
    if include_usage:
        chunks.append({**header, "choices": [], "usage": usage(body, len(deltas))})
    return chunks


def completion(reply: Reply, request_number: int, body: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` object of a non-streamed reply."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": tool_call_id(reply, request_number, index),
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for index, (name, arguments) in enumerate(reply.tool_calls)
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(reply),
    }
    return {
        **completion_header(request_number, body),
        "object": "chat.completion",
        "choices": [choice],
        "usage": usage(body, len(reply_deltas(reply, request_number))),
    }


async def wait_for_release(reply: Reply) -> None:
    """Block this reply (not the server's event loop) until the test sets its event."""
    if reply.release is not None:
        await asyncio.to_thread(reply.release.wait)


async def sse_events(reply: Reply, request_number: int, body: dict[str, Any]) -> AsyncIterator[str]:
    """The reply as Server-Sent Events, stalling after ``hold_after`` of them if it holds."""
    chunks = stream_chunks(reply, request_number, body)
    events = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks]
    hold_at = min(reply.hold_after, len(events))
    for position, event in enumerate([*events, "data: [DONE]\n\n"]):
        if position == hold_at:
            await wait_for_release(reply)
        yield event


def script_exhausted(request_number: int) -> JSONResponse:
    message = f"ScriptedOpenAI has no scripted reply left for request #{request_number}"
    error = {"message": message, "type": "server_error", "param": None, "code": "script_exhausted"}
    return JSONResponse({"error": error}, status_code=500, headers=_NO_KEEP_ALIVE)


def create_app(script: ScriptedOpenAI) -> FastAPI:
    """An app answering ``POST /v1/chat/completions`` from ``script``."""
    app = FastAPI(title="ScriptedOpenAI")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        request_number, reply = script.take(body)
        if reply is None:
            return script_exhausted(request_number)
        if reply.silent or not body.get("stream"):
            await wait_for_release(reply)
        if body.get("stream"):
            return StreamingResponse(
                sse_events(reply, request_number, body),
                media_type="text/event-stream",
                headers=_NO_KEEP_ALIVE,
            )
        return JSONResponse(completion(reply, request_number, body), headers=_NO_KEEP_ALIVE)

    return app


class _ThreadedServer(uvicorn.Server):
    """uvicorn that tells the thread which started it when startup is over, or has failed."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.settled = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.settled.set()

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            super().run(sockets=sockets)
        finally:
            self.settled.set()


@contextmanager
def running_server(target: ScriptedOpenAI | ASGIApp) -> Iterator[str]:
    """Serve ``target`` on 127.0.0.1 in a background thread; yield its ``.../v1`` base URL.

    The port is bound here (port 0, so the OS picks a free one) and handed to uvicorn, so
    there is no window where another process could take it. On exit every stalled reply is
    released and the server drains its connections before the thread is joined.
    """
    app = create_app(target) if isinstance(target, ScriptedOpenAI) else target
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = _ThreadedServer(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name=f"openai-server-{port}", daemon=True
    )
    thread.start()
    try:
        if not server.settled.wait(STARTUP_TIMEOUT_S) or not server.started:
            raise RuntimeError(f"the test OpenAI server on port {port} did not start")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if isinstance(target, ScriptedOpenAI):
            target.release_all()
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)
        listener.close()
    if thread.is_alive():
        raise RuntimeError(f"the test OpenAI server on port {port} did not stop")
