"""The API key (``AGENT_API_KEY``), checked on the request's headers before its body is read.

A route dependency comes too late: FastAPI reads and parses the whole body before it runs any,
so an anonymous client could make the server read and parse 100 MB before its 401. As ASGI
middleware the check runs first, on every path but the public ones, and a refused request's
body is never read. The key is taken as a bearer token or, as LangGraph clients send it
(``langgraph_sdk``, ``RemoteGraph``, Studio), as ``x-api-key``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

REFUSED = JSONResponse(
    {"detail": "missing or wrong API key: send Authorization: Bearer <AGENT_API_KEY> (or x-api-key)"},
    status_code=401,
    headers={"WWW-Authenticate": "Bearer"},
)


class ApiKey:
    """Pure ASGI middleware: 401 unless ``Authorization: Bearer <key>`` or ``x-api-key: <key>``,
    except where ``public(path)``."""

    def __init__(self, app: ASGIApp, key: SecretStr, public: Callable[[str], bool]) -> None:
        self.app = app
        self.key = key.get_secret_value().encode()
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.public(scope["path"]) or self.allowed(scope):
            await self.app(scope, receive, send)
        else:
            await REFUSED(scope, receive, send)

    def allowed(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = headers.get("x-api-key", "")
        return secrets.compare_digest(given.strip().encode(), self.key)
