"""MCP servers as ordinary tools: one kept session per server, progress streamed per tool call.

``AGENT_MCP_CONFIG`` names a JSON file in the ``mcpServers`` shape other MCP clients use,
with optional engine settings (``ToolSpec`` fields) per server and per tool:

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                  "defaults": {"timeout_s": 30, "concurrency_group": "files"},
                  "tools": {"write_file": {"requires_approval": true}}},
        "search": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer ..."}}
    }}

    async with open_mcp_servers(path) as servers:
        tools = servers.tools          # BaseTools carrying a ToolSpec and their source "mcp:<name>"

Tools come from ``langchain-mcp-adapters``. Each server's session is opened once, in a task
of its own (MCP's transports are anyio scopes that must close in the task that opened them),
and every call of its tools goes over it: no process or connection per call.

- Progress: the MCP SDK calls progress callbacks from the session's receive loop, where the
  calling tool's context (its ``tool_call_id``) is not visible. The adapter builds each call's
  callbacks inside the call, so ``ProgressToCaller`` captures the caller's context there and
  runs ``progress.report`` in it: two calls of one tool report under their own ids.
- Errors: an MCP error result becomes an error ``ToolMessage`` (the adapter's default), hence
  ``tool_error``. A server that does not start is reported in ``failures`` and has no tools;
  the others load. A server that dies makes its calls fail with a message saying so, the
  call in flight included: over stdio the SDK reports the closed pipe; over HTTP it does not
  (a broken response stream leaves the call waiting forever), so ``WatchedTransport`` sees the
  transport error in httpx and fails the server's calls in flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.callbacks import CallbackContext, Callbacks, _MCPCallbacks
from langchain_mcp_adapters.interceptors import MCPToolCallRequest
from langchain_mcp_adapters.sessions import Connection, create_session
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp.shared.exceptions import McpError
from mcp.types import CONNECTION_CLOSED
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from agent_ng.tools import progress
from agent_ng.tools.registry import SOURCE_KEY, McpConfigError, ToolSpec, configure

log = logging.getLogger("agent_ng")

STARTUP_TIMEOUT_S = 30.0
MCP_HTTP_TIMEOUT = httpx.Timeout(30.0, read=300.0)
"""The MCP SDK's own default: long reads, since a response may be a long-lived stream."""
SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(ToolSpec))


class McpServerUnavailable(RuntimeError):
    """The tool's MCP server is not running (it exited, or its connection closed)."""


class ServerConfig(BaseModel):
    """One entry of ``mcpServers``: ``command``/``args``/``env`` (stdio) or ``url`` (HTTP)."""

    model_config = ConfigDict(extra="ignore")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] | None = None
    transport: str | None = Field(default=None, validation_alias="type")
    """Only needed for the old SSE transport (``"sse"``); otherwise inferred."""
    prefix: bool = False
    """Name the tools ``<server>_<tool>`` (when two servers have tools of the same name)."""
    startup_timeout_s: float = Field(default=STARTUP_TIMEOUT_S, gt=0)
    """How long the server may take to start and list its tools."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """``ToolSpec`` fields for every tool of this server."""
    tools: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """``ToolSpec`` fields per tool (by the server's own tool name), over ``defaults``."""

    @model_validator(mode="after")
    def _one_transport(self) -> ServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either 'command' (a stdio server) or 'url' (an HTTP server)")
        for where, name in [("defaults", ""), *((f"tools.{n}", n) for n in self.tools)]:
            fields = self.tools[name] if name else self.defaults
            if unknown := set(fields) - SPEC_FIELDS:
                raise ValueError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(SPEC_FIELDS)}")
            try:
                self.spec(name)
            except ValidationError as e:
                problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ValueError(f"{where}: {problems}") from None
        return self

    def connection(self, on_transport_error: Callable[[Exception], None]) -> Connection:
        if self.command is not None:
            return {"transport": "stdio", "command": self.command, "args": self.args, "env": self.env, "cwd": self.cwd}
        transport = "sse" if self.transport == "sse" else "streamable_http"

        def client(headers=None, timeout=None, auth=None) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                headers=headers,
                timeout=timeout or MCP_HTTP_TIMEOUT,
                auth=auth,
                transport=WatchedTransport(httpx.AsyncHTTPTransport(), on_transport_error),
            )

        return {"transport": transport, "url": self.url, "headers": self.headers, "httpx_client_factory": client}

    def spec(self, tool_name: str) -> ToolSpec:
        return TypeAdapter(ToolSpec).validate_python({**self.defaults, **self.tools.get(tool_name, {})})


class McpConfig(BaseModel):
    """The file's shape, ``{"mcpServers": {name: ServerConfig}}``, as other MCP clients write it."""

    mcpServers: dict[str, ServerConfig]


def read_config(path: Path) -> dict[str, ServerConfig]:
    """The servers of an ``mcpServers`` file; a clear ``McpConfigError`` if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
        return McpConfig.model_validate(data).mcpServers
    except OSError as e:
        raise McpConfigError(f"cannot read the MCP config {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise McpConfigError(f"the MCP config {path} is not valid JSON: {e}") from e
    except ValidationError as e:
        raise McpConfigError(f"the MCP config {path} is not usable:\n{e}") from e


class WatchedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that reports any transport error, also one inside a response stream."""

    def __init__(self, inner: httpx.AsyncBaseTransport, on_error: Callable[[Exception], None]) -> None:
        self._inner = inner
        self._on_error = on_error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as e:
            self._on_error(e)
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=WatchedStream(response.stream, self._on_error),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class WatchedStream(httpx.AsyncByteStream):
    """A response body that reports a transport error met while it is read."""

    def __init__(self, inner: Any, on_error: Callable[[Exception], None]) -> None:
        self._inner = inner
        self._on_error = on_error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as e:
            self._on_error(e)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class ProgressToCaller(Callbacks):
    """Adapter callbacks whose progress goes to the tool call that made the MCP request."""

    def to_mcp_format(self, *, context: CallbackContext) -> _MCPCallbacks:
        caller = contextvars.copy_context()

        async def forward(done: float, total: float | None, message: str | None) -> None:
            caller.run(progress.report, fraction(done, total), message or "")

        return dataclasses.replace(super().to_mcp_format(context=context), progress_callback=forward)


def fraction(done: float, total: float | None) -> float | None:
    """MCP progress (a count and an optional total) as a fraction in [0, 1], None if unknown."""
    if not total:
        return None
    return min(max(done / total, 0.0), 1.0)


@dataclasses.dataclass
class McpServer:
    """One configured server: its kept session, its tools, or why it has none."""

    name: str
    config: ServerConfig
    tools: list[BaseTool] = dataclasses.field(default_factory=list)
    error: str | None = None
    """Why the server is not available (did not start, or stopped); None while it runs."""
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _gone: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the session and load the tools; on failure set ``error`` instead of raising."""
        ready: asyncio.Future[list[BaseTool]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold_session(ready), name=f"mcp:{self.name}")
        timeout_s = self.config.startup_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                tools = await asyncio.shield(ready)
        except TimeoutError:
            self.error = f"did not answer within {timeout_s:g} s"
            ready.cancel()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            return
        except Exception as e:
            self.error = f"did not start: {describe(e)}"
            return
        self.tools = [self._adopt(t) for t in tools]

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None and not self._task.done():
            try:
                async with asyncio.timeout(5):
                    await self._task
            except TimeoutError:
                self._task.cancel()

    async def _hold_session(self, ready: asyncio.Future[list[BaseTool]]) -> None:
        try:
            async with create_session(self.config.connection(self._transport_failed)) as session:
                await session.initialize()
                tools = await load_mcp_tools(
                    session,
                    callbacks=ProgressToCaller(),
                    tool_interceptors=[self._say_when_gone],
                    server_name=self.name,
                    tool_name_prefix=self.config.prefix,
                )
                ready.set_result(tools)
                await self._stop.wait()
        except Exception as e:
            if not ready.done():
                ready.set_exception(e)
            else:
                self._lose(f"its session ended ({describe(e)})")

    def _adopt(self, tool: BaseTool) -> BaseTool:
        mcp_name = tool.name.removeprefix(f"{self.name}_") if self.config.prefix else tool.name
        spec = self.config.spec(mcp_name)
        tool.metadata = {**(tool.metadata or {}), SOURCE_KEY: f"mcp:{self.name}"}
        return configure(tool, **dataclasses.asdict(spec))

    def _lose(self, why: str) -> None:
        """Mark the server gone: calls in flight and later calls fail, saying ``why``."""
        if not self.error:
            self.error = why
        self._gone.set()

    def _transport_failed(self, e: Exception) -> None:
        if not self._stop.is_set():
            self._lose(f"its connection failed ({describe(e)})")

    async def _say_when_gone(self, request: MCPToolCallRequest, handler: Any) -> Any:
        """Run the call, unless or until the server is gone; then fail it with a clear message."""
        if self.error:
            raise McpServerUnavailable(f"MCP server {self.name!r} is not available: {self.error}")
        call = asyncio.ensure_future(handler(request))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not call.done():
                call.cancel()
                call.add_done_callback(lambda task: task.cancelled() or task.exception())
        if call.done() and not call.cancelled():
            try:
                return call.result()
            except McpError as e:
                if e.error.code != CONNECTION_CLOSED:
                    raise
                self._lose("its connection closed during a call (the server exited or went away)")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._lose("its connection is closed (the server exited or went away)")
        raise McpServerUnavailable(f"MCP server {self.name!r} stopped: {self.error}")


def describe(e: BaseException) -> str:
    """The innermost useful message of an error, also inside anyio's exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    if isinstance(e, McpError) and e.error.code == CONNECTION_CLOSED:
        return "the server closed the connection during start-up (did its process exit?)"
    return f"{type(e).__name__}: {e}"


@dataclasses.dataclass
class McpServers:
    """The configured servers once started: their tools together, and why the others have none."""

    servers: list[McpServer]

    @property
    def tools(self) -> list[BaseTool]:
        return [t for s in self.servers for t in s.tools]

    @property
    def failures(self) -> dict[str, str]:
        return {s.name: s.error for s in self.servers if s.error}


@asynccontextmanager
async def open_mcp_servers(path: Path) -> AsyncIterator[McpServers]:
    """Start every server in the file at once; their sessions stay open inside the block.

    A bad file raises ``McpConfigError``. A server that does not start is logged and listed
    in ``failures``; the other servers' tools are still there.
    """
    servers = McpServers([McpServer(name, config) for name, config in read_config(path).items()])
    try:
        await asyncio.gather(*(s.start() for s in servers.servers))
        for name, error in servers.failures.items():
            log.warning("agent-ng: MCP server %r %s; its tools are not available.", name, error)
        yield servers
    finally:
        await asyncio.gather(*(s.stop() for s in servers.servers))
