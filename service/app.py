"""The FastAPI app: the graph built once at start-up, its runs, threads, health, metrics and page.

    uvicorn --factory agent_ng.service.app:create_app        # or: agent-ng serve

The lifespan opens the agent as the CLI does (``agent_ng.graph.agent.open_agent``): the checkpointer
(``AGENT_CHECKPOINT_URL``), the tool store (``AGENT_CACHE_URL``) and the built-in plus MCP
tools; every request shares that graph. ``/metrics`` adds the tool engine's figures (per-tool
stats from the store, concurrency groups) to the service's own run counters.

| route | what |
| --- | --- |
| ``POST /threads/{id}/runs/stream`` | ask on a thread; SSE, one event per ``AgentEvent`` |
| ``POST /threads/{id}/runs`` | start a run in the background; ``{"run_id"}`` |
| ``GET /threads/{id}/runs/{run_id}`` | a run's status and attempt |
| ``GET /threads/{id}/runs/{run_id}/stream`` | join a run (after ``Last-Event-ID`` if given) |
| ``POST /threads/{id}/runs/{run_id}/cancel`` | cancel a run |
| ``POST /agui`` | the same run in the AG-UI protocol |
| ``GET /threads``, ``GET /threads/{id}``, ``GET /threads/{id}/history``, ``DELETE /threads/{id}`` | threads |
| ``/langgraph/...`` | the LangGraph Server API (``agent_ng.service.langgraph_server``) |
| ``GET /healthz`` | liveness, never needs the key |
| ``GET /metrics`` | Prometheus text |
| ``GET /`` | the live web page |

Before a request reaches a route, ASGI middlewares judge it on its headers, outermost first:
its ``Host`` (``agent_ng.service.hosts``, 400), its origin (``agent_ng.service.cors``, with
``AGENT_CORS_ORIGINS``), the API key (``agent_ng.service.api_key``, 401) and its body's size as
it arrives (``agent_ng.service.body_limit``, 413); a ``text/plain`` body under ``/langgraph`` is
then read as JSON, as Studio sends it. With ``AGENT_API_KEY`` set, every route but
``/healthz``, the page and its static files (they hold no data, and the page asks for the key)
needs ``Authorization: Bearer <key>`` or ``x-api-key: <key>``. A 422 never echoes
what it refused (``agent_ng.service.inputs.validation_error``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from agent_ng.engine.tool_stats import ToolStatsCollector, tool_stats
from agent_ng.graph.agent import open_agent
from agent_ng.persistence.threads import UnfinishedRunError
from agent_ng.persistence.unavailable import CheckpointUnavailableError
from agent_ng.service import agui, drain, langgraph_server, runs, threads
from agent_ng.service.api_key import ApiKey
from agent_ng.service.background import BackgroundRuns, OverloadedError
from agent_ng.service.body_limit import BodyLimit
from agent_ng.service.cors import cors
from agent_ng.service.drain import Drain
from agent_ng.service.event_log import EventLogUnavailableError, event_log
from agent_ng.service.hosts import TrustedHosts, allowed_hosts
from agent_ng.service.inputs import validation_error
from agent_ng.service.langgraph_server import runs as lg_runs
from agent_ng.service.langgraph_server.plain_json import PlainTextJson
from agent_ng.service.langgraph_server.run_records import RunRecords
from agent_ng.service.metrics import GroupLimitsCollector, Metrics, RunQueueCollector
from agent_ng.service.runner import Runner
from agent_ng.service.settings import ServiceSettings
from agent_ng.service.shared_runs import SharedRuns
from agent_ng.service.topology import refusal, sqlite_presence

STATIC = Path(__file__).parent / "static"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})
PUBLIC_PREFIX = "/static/"


def create_app(
    settings: ServiceSettings | None = None,
    *,
    model: BaseChatModel | None = None,
    tools: Sequence[BaseTool | Callable[..., Any]] | None = None,
    collectors: Iterable[Collector] = (),
) -> FastAPI:
    """The service; ``model`` and ``tools`` default to the agent's own (as in ``build_graph``).

    ``collectors`` are extra Prometheus collectors shown on ``/metrics`` (see ``agent_ng.service.metrics``).
    """
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if reason := refusal(settings):
            raise RuntimeError(reason)
        async with sqlite_presence(settings), open_agent(settings, model, tools) as agent:
            app.state.agent = agent
            app.state.runner = Runner(agent.graph, app.state.metrics)
            app.state.runs = BackgroundRuns(
                app.state.runner,
                event_log(settings),
                max_runs=settings.max_runs,
                retry_after_s=settings.retry_after_s,
                shared=await shared_runs(agent.graph.checkpointer, settings),
                draining=lambda: app.state.drain.draining,
            )
            app.state.runs.kinds[lg_runs.KIND] = lg_runs.run_kind(app.state.run_records)
            drain: Drain = app.state.drain
            drain.install()
            try:
                await app.state.runs.listen()
                yield
                if drain.draining:  # uvicorn waited for the open streams; the background runs get the rest
                    await app.state.runs.wait(drain.left(settings.drain_s))
            finally:
                drain.uninstall()
                await app.state.runs.close()
                await app.state.runs.events.close()

    app = FastAPI(title="agent-ng", lifespan=lifespan)
    app.add_exception_handler(UnfinishedRunError, unfinished_run)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(CheckpointUnavailableError, unavailable)
    app.add_exception_handler(EventLogUnavailableError, unavailable)
    app.add_exception_handler(OverloadedError, overloaded)
    app.state.settings = settings
    app.state.metrics = Metrics(collectors)
    app.state.run_records = RunRecords()
    app.state.drain = Drain()
    app.add_middleware(PlainTextJson, prefix=langgraph_server.PREFIX)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKey, key=settings.api_key, public=public)
    if settings.cors_origins:
        app.add_middleware(cors, origins=settings.cors_origins)
    if (hosts := allowed_hosts(settings)) is not None:
        app.add_middleware(TrustedHosts, allowed=hosts)

    app.include_router(runs.router)
    app.include_router(agui.router)
    app.include_router(threads.router)
    app.include_router(langgraph_server.router)
    app.include_router(drain.router)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        agent = request.app.state.agent
        stats = ToolStatsCollector(await tool_stats(agent.tool_store))
        runs: BackgroundRuns = request.app.state.runs
        queued = await runs.shared.table.queued() if runs.shared else runs.queued()
        queue = RunQueueCollector(queued, runs.held())
        body = request.app.state.metrics.render(stats, GroupLimitsCollector(agent.group_limits), queue)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def unfinished_run(request: Request, error: Exception) -> JSONResponse:
    """409 for a question on a thread whose last run has not finished."""
    return JSONResponse({"detail": str(error)}, status_code=409)


async def overloaded(request: Request, error: Exception) -> JSONResponse:
    """503 with ``Retry-After`` for a streamed run past ``AGENT_MAX_RUNS``."""
    assert isinstance(error, OverloadedError)
    return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": str(error.retry_after_s)})


async def shared_runs(saver: Any, settings: ServiceSettings) -> SharedRuns | None:
    """The run table shared by the replicas, on a PostgreSQL checkpointer's database; else ``None``
    (runs live in this process)."""
    if not settings.checkpoint_url.startswith(("postgresql://", "postgres://")):
        return None
    from agent_ng.persistence.run_table import PostgresRunTable  # the postgres extra

    table = PostgresRunTable(
        saver.conn, lease_s=settings.run_lease_s, timeout_s=settings.checkpoint_timeout_s, queue=settings.run_queue
    )
    await table.setup()
    return SharedRuns(table, settings.run_lease_s, settings.run_poll_s, settings.run_max_attempts)


async def unavailable(request: Request, error: Exception) -> JSONResponse:
    """503 with the one-line reason when a store the service needs (the checkpoint database,
    Redis) cannot be reached: it may be back in a moment, so not a 500."""
    return JSONResponse({"detail": str(error)}, status_code=503)


def public(path: str) -> bool:
    """Whether ``path`` is open without the API key: liveness, the page and its static files."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)
