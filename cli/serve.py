"""``agent-ng serve``: the HTTP service and its live page, on 127.0.0.1:8000 by default.

agent-ng serve                      # then open http://127.0.0.1:8000
agent-ng serve --host 0.0.0.0 --port 9000   # set AGENT_API_KEY before exposing it
agent-ng serve --workers 4          # four processes on one port; needs AGENT_REDIS_URL

With more than one worker uvicorn's parent process binds the port and starts the workers, each
importing the app by name and reading its settings from the environment, so the command line's
choices go there first. A configuration that cannot work across processes is refused before
anything starts (``agent_ng.service.topology``). On SIGTERM each process drains: it stops
accepting, and open streams get ``AGENT_DRAIN_S`` to finish (``agent_ng.service.drain``).
"""

from __future__ import annotations

import asyncio
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from agent_ng.graph.toolset import mcp_servers
from agent_ng.models.chat import OPENAI, ModelConfigError, chat_model, split_model
from agent_ng.tools.registry import McpConfigError

if TYPE_CHECKING:
    from agent_ng.service.settings import ServiceSettings



def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default: AGENT_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: AGENT_PORT or 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Server processes on one port (default: AGENT_WORKERS or 1); more than one needs AGENT_REDIS_URL."
        ),
    ] = None,
) -> None:
    """Serve the agent over HTTP: SSE and AG-UI runs, threads, metrics and the web page."""
    try:
        import uvicorn

        from agent_ng.service.app import create_app
        from agent_ng.service.hosts import described
        from agent_ng.service.settings import ServiceSettings
        from agent_ng.service.topology import refusal, shared_sqlite_refusal
    except ImportError as e:
        raise typer.BadParameter(
            f"the service needs its extra ({e.name} is missing): pip install 'agent-ng[service]'"
        ) from e
    chosen = {"host": host, "port": port, "workers": workers}
    overrides = {k: v for k, v in chosen.items() if v is not None}
    settings = ServiceSettings(**overrides)
    try:  # else uvicorn reports it as a traceback from the app's start-up
        if reason := refusal(settings) or asyncio.run(shared_sqlite_refusal(settings)):
            raise RuntimeError(reason)
        if split_model(settings.model)[0] != OPENAI:
            chat_model(settings)
        if settings.mcp_config:
            mcp_servers().read_config(settings.mcp_config)
    except (McpConfigError, ModelConfigError, RuntimeError) as e:
        typer.echo(f"agent-ng: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"agent-ng: serving on http://{settings.host}:{settings.port}", err=True)
    typer.echo(f"agent-ng: {described(settings)}", err=True)
    if settings.workers > 1:
        os.environ |= {f"AGENT_{k.upper()}": str(v) for k, v in overrides.items()}
        serve_workers(settings)
        return
    signal.signal(signal.SIGTERM, stopped)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=settings.drain_s,
    )


def stopped(sig: int, frame: FrameType | None) -> None:
    """Exit 0: a SIGTERM that uvicorn has already served by shutting down cleanly.

    uvicorn raises the signal it stopped on again once it has shut down, with the handler it
    found; SIGTERM's default would then kill the finished process (status 143) where SIGINT's
    ends it with 0.
    """
    raise SystemExit(0)


def serve_workers(settings: ServiceSettings) -> None:
    """uvicorn's parent process and ``settings.workers`` workers, each building the app itself.

    Exits with uvicorn's start-up failure status (3) when a worker could not start (its
    lifespan refused the configuration, say), where uvicorn's own parent would exit 0.
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from agent_ng.service.drain import WORKER_START_S, Workers

    config = uvicorn.Config(
        "agent_ng.service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        timeout_graceful_shutdown=settings.drain_s,
        timeout_worker_healthcheck=WORKER_START_S,
    )
    workers = Workers(config, sockets=[config.bind_socket()])
    workers.run()
    if any(process.exitcode == STARTUP_FAILURE for process in workers.processes):
        raise typer.Exit(STARTUP_FAILURE)
