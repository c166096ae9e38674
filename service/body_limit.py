"""The request body limit, counted as the bytes arrive: no request body grows past ``AGENT_MAX_BODY_BYTES``.

A check of ``Content-Length`` alone lets a chunked body through whole, and FastAPI reads a body
whole before any route dependency runs; so this wraps the ASGI ``receive`` under every route:

- a declared ``Content-Length`` over the limit gets its 413 before the app runs;
- otherwise the bytes are counted as they are received, and the chunk that passes the limit
  raises the 413, so the rest is never read (the server closes the connection after answering).

Starlette's ``RequestBodyLimitMiddleware`` counts the same way but answers a declared length
only once the app reads, in plain text; the service's errors are JSON ``{"detail"}`` naming
the setting.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Pure ASGI middleware: 413 for a body past ``max_bytes``, declared or counted."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = f"the request body is too large; the limit is {max_bytes:,} bytes (AGENT_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self.detail}, status_code=413)(scope, receive, send)
            return
        read = 0

        async def counted() -> Message:
            """``receive``, raising the 413 (rendered by the app's handler) past the limit."""
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.max_bytes:
                raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counted, send)
