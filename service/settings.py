"""The service's own settings, on top of the agent's (``AGENT_*`` variables as well).

``AGENT_API_KEY`` turns authentication on: every route but ``/healthz`` (and the static page,
which holds no data and asks for the key) then needs ``Authorization: Bearer <key>`` (or
``x-api-key: <key>``, as LangGraph's clients send it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

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
    """The key every route but ``/healthz`` and the page's static files needs, as a bearer token
    (``Authorization: Bearer <key>``) or ``x-api-key: <key>``, 401 without it; unset: no
    authentication."""
    max_input_chars: int = Field(default=20_000, ge=1)
    """Longest question a run accepts; longer ones get a 422."""
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    """Largest request body, counted as it arrives (chunked or not); a larger one gets a 413
    as soon as it passes the limit, the rest unread. Parsing and validating hold the event loop
    in proportion: about 0.2 s per MB for an AG-UI history of tiny messages, 0.5 s for a body
    of tiny wrong keys (each an error)."""
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """Host names the service answers besides localhost and the bound address, comma-separated
    (``agent.example,*.corp.example``; ``*``: any); other ``Host`` headers get a 400. Bound to
    ``0.0.0.0``/``::`` with ``AGENT_API_KEY`` set and this unset, any host is answered."""

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts_comma_separated(cls, value: object) -> object:
        return Settings._comma_separated(value)

    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    """Origins whose pages may call the service from a browser, comma-separated
    (``https://smith.langchain.com`` for LangGraph Studio; ``*``: any); unset: none. Their
    private-network preflights are allowed too, so Studio reaches a service on this machine."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins_comma_separated(cls, value: object) -> object:
        return Settings._comma_separated(value)

    sse_ping_s: float = Field(default=15.0, gt=0)
    """Seconds between keep-alive comments on an idle event stream."""

    redis_url: str | None = None
    """Keep run event logs in Redis Streams (the ``redis`` extra), so any replica can serve a
    reconnect, a join or a cancel; unset keeps them in this process."""
    redis_prefix: str = "agent-ng:"
    """Prefix of the service's Redis keys."""
    run_log_max_events: int = Field(default=10_000, ge=1)
    """Events kept per run for reconnects (Redis trims approximately)."""
    run_log_max_bytes: int = Field(default=64_000_000, ge=1)
    """Bytes of event JSON the in-process log keeps across all runs; past it the oldest finished
    runs are dropped (a running run only loses its oldest events)."""
    run_log_retention_s: float = Field(default=600.0, gt=0)
    """Seconds a run's events stay joinable (in memory after its end; in Redis after its last
    event)."""

    workers: int = Field(default=1, ge=1)
    """Server processes on one port (``agent-ng serve --workers N``); more than one needs
    ``AGENT_REDIS_URL``, so that every process reads every run's events and cancels."""
    max_runs: int = Field(default=32, ge=1)
    """Runs this process runs at once. Past it a background run waits in the queue (shared by
    the replicas on PostgreSQL) and a streamed run gets 503 with ``Retry-After``, or waits too
    with ``AGENT_STREAM_OVERLOAD=queue``."""
    stream_overload: Literal["reject", "queue"] = "reject"
    """What a streamed run gets past ``AGENT_MAX_RUNS``: ``reject`` (503 with ``Retry-After``)
    or ``queue`` (it waits its turn, its stream open)."""
    retry_after_s: int = Field(default=2, ge=1)
    """The ``Retry-After`` of a 503 for a streamed run past ``AGENT_MAX_RUNS``."""
    run_lease_s: float = Field(default=5.0, gt=0)
    """With a PostgreSQL checkpointer runs are records every replica sees: the replica running
    one renews its lease every third of this, and when a lease lapses (its replica died or is
    frozen) another replica takes the run over from its last checkpoint, fencing the old one
    out. A run is taken over within about this plus ``AGENT_RUN_POLL_S``."""
    run_queue: str = Field(default="agent-ng", min_length=1)
    """The replicas that share runs: each takes over only the runs of its own queue. Deployments
    sharing one database (other tools, another model) need a queue each."""
    run_poll_s: float = Field(default=0.5, gt=0)
    """How often a replica looks for queued runs and runs whose lease lapsed."""
    run_max_attempts: int = Field(default=3, ge=1)
    """Attempts a run gets: a run whose replica died this many times ends with status ``error``."""
    drain_s: float = Field(default=30.0, ge=0)
    """On SIGTERM, seconds open streams get to finish (the replica answers ``/readyz`` with 503
    and starts no run meanwhile); then its runs are handed over to the other replicas."""
