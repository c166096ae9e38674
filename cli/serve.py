"""``agent-ng serve``: the HTTP service and its live page, on 127.0.0.1:8000 by default.

agent-ng serve                      # then open http://127.0.0.1:8000
agent-ng serve --host 0.0.0.0 --port 9000   # set AGENT_API_KEY before exposing it
"""

from __future__ import annotations

from typing import Annotated

import typer

from agent_ng.graph.toolset import mcp_servers
from agent_ng.models.chat import OPENAI, ModelConfigError, chat_model, split_model
from agent_ng.tools.registry import McpConfigError


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default: AGENT_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: AGENT_PORT or 8000).")] = None,
) -> None:
    """Serve the agent over HTTP: SSE and AG-UI runs, threads, metrics and the web page."""
    try:
        import uvicorn

        from agent_ng.service.app import create_app
        from agent_ng.service.hosts import described
        from agent_ng.service.settings import ServiceSettings
    except ImportError as e:
        raise typer.BadParameter(
            f"the service needs its extra ({e.name} is missing): pip install 'agent-ng[service]'"
        ) from e
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = ServiceSettings(**overrides)
    try:  # else uvicorn reports it as a traceback from the app's start-up
        if split_model(settings.model)[0] != OPENAI:
            chat_model(settings)
        if settings.mcp_config:
            mcp_servers().read_config(settings.mcp_config)
    except (McpConfigError, ModelConfigError, RuntimeError) as e:
        typer.echo(f"agent-ng: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"agent-ng: serving on http://{settings.host}:{settings.port}", err=True)
    typer.echo(f"agent-ng: {described(settings)}", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
