"""LangGraph Studio posts its JSON bodies as ``text/plain`` (a "simple" request skips the CORS
preflight); LangGraph Server reads any body as JSON, so under ``/langgraph`` such a body is
read as ``application/json`` too, and FastAPI validates it as it would any JSON body."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

PLAIN = b"text/plain"
JSON = (b"content-type", b"application/json")


class PlainTextJson:
    """Pure ASGI middleware: a ``text/plain`` request under ``prefix`` is taken as JSON."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            headers = scope["headers"]
            if any(k == b"content-type" and v.startswith(PLAIN) for k, v in headers):
                scope = {**scope, "headers": [JSON if k == b"content-type" else (k, v) for k, v in headers]}
        await self.app(scope, receive, send)
