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
| ``GET /threads/{id}/runs/{run_id}/stream`` | join a run (after ``Last-Event-ID`` if given) |
| ``POST /threads/{id}/runs/{run_id}/cancel`` | cancel a run |
| ``POST /agui`` | the same run in the AG-UI protocol |
| ``GET /threads``, ``GET /threads/{id}``, ``GET /threads/{id}/history``, ``DELETE /threads/{id}`` | threads |
| ``GET /healthz`` | liveness, never needs the key |
| ``GET /metrics`` | Prometheus text |
| ``GET /`` | the live web page |

With ``AGENT_API_KEY`` set, the data routes need ``Authorization: Bearer <key>`` (401 otherwise).
The page's static files stay public: they hold no data, and the page asks for the key.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from agent_ng.engine.tool_stats import ToolStatsCollector, tool_stats
from agent_ng.graph.agent import open_agent
from agent_ng.persistence.threads import UnfinishedRunError
from agent_ng.service import agui, runs, threads
from agent_ng.service.background import BackgroundRuns
from agent_ng.service.event_log import EventLog, MemoryEventLog, RedisEventLog
from agent_ng.service.inputs import limit_body
from agent_ng.service.metrics import GroupLimitsCollector, Metrics
from agent_ng.service.runner import Runner
from agent_ng.service.settings import ServiceSettings

STATIC = Path(__file__).parent / "static"

bearer = HTTPBearer(auto_error=False)


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
        async with open_agent(settings, model, tools) as agent:
            app.state.agent = agent
            app.state.runner = Runner(agent.graph, app.state.metrics)
            app.state.runs = BackgroundRuns(app.state.runner, event_log(settings))
            await app.state.runs.listen()
            try:
                yield
            finally:
                await app.state.runs.close()
                await app.state.runs.events.close()

    app = FastAPI(title="agent-ng", lifespan=lifespan)
    app.add_exception_handler(UnfinishedRunError, unfinished_run)
    app.state.settings = settings
    app.state.metrics = Metrics(collectors)

    protected = [Depends(require_api_key)]
    app.include_router(runs.router, dependencies=[*protected, Depends(limit_body)])
    app.include_router(agui.router, dependencies=[*protected, Depends(limit_body)])
    app.include_router(threads.router, dependencies=protected)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=protected, summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        agent = request.app.state.agent
        stats = ToolStatsCollector(await tool_stats(agent.tool_store))
        body = request.app.state.metrics.render(stats, GroupLimitsCollector(agent.group_limits))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def event_log(settings: ServiceSettings) -> EventLog:
    """The runs' event log: in Redis when ``AGENT_REDIS_URL`` is set (replicas share it), else in this process."""
    if settings.redis_url:
        return RedisEventLog(
            settings.redis_url,
            prefix=settings.redis_prefix,
            max_events=settings.run_log_max_events,
            retention_s=settings.run_log_retention_s,
        )
    return MemoryEventLog(settings.run_log_max_events, settings.run_log_retention_s)


async def unfinished_run(request: Request, error: Exception) -> JSONResponse:
    """409 for a question on a thread whose last run has not finished."""
    return JSONResponse({"detail": str(error)}, status_code=409)


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """401 unless the request carries the ``AGENT_API_KEY`` bearer token (when one is set)."""
    key = request.app.state.settings.api_key
    if key is None:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise HTTPException(
            401,
            "missing or wrong API key: send Authorization: Bearer <AGENT_API_KEY>",
            headers={"WWW-Authenticate": "Bearer"},
        )
