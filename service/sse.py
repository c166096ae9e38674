"""Server-Sent Events as this service sends them: chunks of ready-made SSE text, one write each.

A route makes the text (``agent_ng.service.runs.sse_events``, the LangGraph Server API's
``run_answers.sse_frames``), every event ready at once in one chunk; ``EventStream`` sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from datetime import UTC, datetime

from fastapi.responses import Response
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send


def timestamped_ping() -> str:
    """sse_starlette's keep-alive comment."""
    return f"ping - {datetime.now(UTC)}"


class Final(bytes):
    """The chunk that ends a stream: ``EventStream`` ends the body with it, in the same write."""


class EventStream(Response):
    """An SSE response of chunks made elsewhere, as sse_starlette's ``EventSourceResponse``
    sends them: a comment (``: ping - <time>`` unless ``comment`` says) every ``ping`` seconds, the
    stream stopped (its iterator closed) when the client disconnects, and ended cleanly when the
    server exits (sse_starlette's exit signal, which ``agent_ng.service.drain`` holds back). A
    ``Final`` chunk ends the body (the stream's iterator is closed then).

    Not ``EventSourceResponse`` itself: its anyio task group of four tasks and a cancel scope
    per chunk cost about 0.4 ms of CPU per stream and a few µs per chunk, as much as the rest of
    the response. Here the stream, the disconnect and the exit are three plain tasks, and the
    request's own task waits for the first to finish, pinging while it waits.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        ping: float,
        headers: Mapping[str, str] | None = None,
        comment: Callable[[], str] = timestamped_ping,
    ) -> None:
        self.body_iterator = chunks
        self.ping_s = ping
        self.comment = comment
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", **(headers or {}), "Connection": "keep-alive",
                           "X-Accel-Buffering": "no"})
        self._sending = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        stream = asyncio.create_task(self._stream(send))
        gone = asyncio.create_task(self._disconnect(receive))
        exiting = asyncio.create_task(EventSourceResponse._listen_for_exit_signal())
        tasks = (stream, gone, exiting)
        try:
            while not any(task.done() for task in tasks):
                done, _ = await asyncio.wait(tasks, timeout=self.ping_s, return_when=asyncio.FIRST_COMPLETED)
                if not done and not self._sending:
                    ping = f": {self.comment()}\r\n\r\n".encode()
                    await send({"type": "http.response.body", "body": ping, "more_body": True})
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        if stream.cancelled():
            if not gone.done():  # the server exits: end the body, or the client sees it cut
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif (error := stream.exception()) is not None:
            raise error

    async def _stream(self, send: Send) -> None:
        async with aclosing(self.body_iterator) as chunks:
            async for chunk in chunks:
                self._sending = True
                await send({"type": "http.response.body", "body": chunk, "more_body": type(chunk) is not Final})
                self._sending = False
                if type(chunk) is Final:
                    return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
