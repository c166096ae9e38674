"""The service's own settings, on top of the agent's (``AGENT_*`` variables as well).

``AGENT_API_KEY`` turns authentication on: every route but ``/healthz`` (and the static page,
which holds no data and asks for the key) then needs ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from agent_ng.settings import Settings


class ServiceSettings(Settings):
    """``agent-ng serve``'s settings: the agent's (``Settings``) and these.

    ``agent_ng.service.app.create_app`` takes one; the command line's ``--host`` and ``--port``
    win over ``AGENT_HOST`` and ``AGENT_PORT``.
    """

    host: str = "127.0.0.1"
    """The interface the server binds (``0.0.0.0``: every interface; set ``AGENT_API_KEY`` first)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """The port the server listens on."""
    api_key: SecretStr | None = None
    """The bearer token (``Authorization: Bearer <key>``) every route but ``/healthz`` and the page's
    static files needs, 401 without it; unset: no authentication."""
    max_input_chars: int = Field(default=20_000, ge=1)
    """Longest question a run accepts; longer ones get a 422."""
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    """Largest request body (by ``Content-Length``); larger ones get a 413 before parsing."""
    sse_ping_s: float = Field(default=15.0, gt=0)
    """Seconds between keep-alive comments on an idle event stream."""

    redis_url: str | None = None
    """Keep run event logs in Redis Streams (the ``redis`` extra), so any replica can serve a
    reconnect, a join or a cancel; unset keeps them in this process."""
    redis_prefix: str = "agent-ng:"
    """Prefix of the service's Redis keys."""
    run_log_max_events: int = Field(default=10_000, ge=1)
    """Events kept per run for reconnects (Redis trims approximately)."""
    run_log_retention_s: float = Field(default=600.0, gt=0)
    """Seconds a run's events stay joinable (in memory after its end; in Redis after its last
    event)."""
