"""Settings from the environment (and a ``.env`` file), in one place: ``Settings``.

Every field's docstring is its description; the reference of all variables, docs/settings.md,
is generated from them by ``agent-ng settings`` (``agent_ng.cli.settings``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """The agent's settings: the model, where threads and tool results are stored, the limits.

    Each is an environment variable, ``AGENT_`` and the field's name (any case), or a line of a
    ``.env`` file in the working directory; the model's key and URL also take OpenAI's own
    names. In Python, a keyword argument by field name wins over both:
    ``Settings(max_concurrency=8)``.
    """

    model_config = SettingsConfigDict(
        env_prefix="AGENT_", env_file=".env", extra="ignore", use_attribute_docstrings=True
    )

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "AGENT_OPENAI_API_KEY")
    )
    """The OpenAI API key. With neither it nor ``OPENAI_BASE_URL``, an OpenAI model is replaced
    by the rule-based offline model, which says so in one line."""
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "AGENT_OPENAI_BASE_URL")
    )
    """An OpenAI-compatible server (vLLM, Ollama, llama.cpp): enough alone, as such servers
    usually need no key."""
    model: str = "gpt-4o-mini"
    """The chat model: a model name for OpenAI, or ``provider:model`` in LangChain's
    ``init_chat_model`` form (other providers once their LangChain package is installed)."""
    model_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds the model may stay silent: to connect and send its first chunk, and between two
    chunks; past it the run ends with an error naming the model (``run_end`` status ``error``)."""
    system_prompt: str = (
        "You are agent-ng, a helpful assistant. Use the tools when they help; when several "
        "are needed, call them together in one turn so they run in parallel."
    )
    """The system message sent before the history on every model call (empty: none)."""

    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir("agent-ng")))
    """Where the default SQLite files live (``checkpoints.db``, ``tool_engine.db``); default: the
    user data directory, ``platformdirs.user_data_dir("agent-ng")`` (``~/.local/share/agent-ng``
    on Linux)."""
    checkpoint_url: str = ""
    """Where threads are checkpointed: ``memory://``, ``sqlite:///path.db`` or
    ``postgresql://...`` (the ``postgres`` extra); unset: ``checkpoints.db`` in ``data_dir``."""

    max_concurrency: int = Field(default=3, ge=1)
    """Tool calls running at once in one step of a run (LangGraph's ``max_concurrency``; per run:
    ``config["max_concurrency"]``). A call waiting for its concurrency group holds one."""
    max_steps: int = Field(default=20, ge=1)
    """Model turns per user message before the agent stops with a plain answer saying so
    (``run_end`` status ``max_steps``)."""

    memory_max_tokens: int = Field(default=32_000, ge=0)
    """Token budget of the history sent to the model each call (0: send it all); the thread keeps all."""
    memory_summary: bool = False
    """Summarise what the budget drops (one extra model call when more is dropped) and send the summary."""
    checkpoint_pool_size: int = Field(default=10, ge=1)
    """Connections in the PostgreSQL checkpointer's pool."""
    checkpoint_timeout_s: float = Field(default=5.0, gt=0)
    """Longest wait for the PostgreSQL checkpoint database per operation (connecting included);
    past it the request gets a 503, or the run ends with an error, naming the database."""

    # Real tools (tools/http_fetch.py, tools/file_search.py, tools/sql_query.py).
    http_allow: Annotated[tuple[str, ...], NoDecode] = ()
    """Hosts, addresses or CIDRs ``http_fetch`` may reach although private:
    ``127.0.0.1,::1,10.0.0.0/8,intranet.example``."""
    http_max_bytes: int = Field(default=1_000_000, ge=1)
    """Bytes of a body ``http_fetch`` keeps at most, counted after decompression (also the
    ceiling of its ``max_bytes`` argument); the result says when it was cut."""
    http_timeout_s: float = Field(default=20.0, gt=0)
    """Seconds one ``http_fetch`` may take, redirects included."""
    http_max_redirects: int = Field(default=5, ge=0)
    """Redirects ``http_fetch`` follows, each hop's address checked again."""
    files_root: Path = Path(".")
    """The directory ``file_search`` searches and cannot leave (default: the current one)."""
    sql_db: Path | None = None
    """The SQLite file ``sql_query`` reads; without it the agent has no ``sql_query`` tool."""
    sql_max_rows: int = Field(default=500, ge=1)
    """Rows one ``sql_query`` returns at most; the result says when some were left out."""
    sql_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds one ``sql_query`` may run."""

    # Concurrency groups (engine/concurrency.py): per process, shared by every run.
    group_limits: dict[str, Annotated[int, Field(ge=1)]] = {"network": 3}
    """Calls of one ``concurrency_group`` running at once in this process, across runs and
    threads, e.g. ``{"network": 3}``."""
    adaptive_concurrency: bool = False
    """Move each group's limit between the floor and ceiling from observed latency and errors."""
    adaptive_floor: int = Field(default=1, ge=1)
    """The lowest limit an adaptive group goes down to."""
    adaptive_ceiling: int = Field(default=16, ge=1)
    """The highest limit an adaptive group goes up to (at least the group's configured limit)."""

    @field_validator("http_allow", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    # MCP tools and tracing (docs/tool-engine.md, docs/tracing.md)
    mcp_config: Path | None = None
    """An ``mcpServers`` JSON file whose servers' tools join the built-in ones (the ``mcp`` extra)."""
    tracing: Literal["off", "otlp"] = "off"
    """``otlp``: OpenTelemetry spans to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the ``tracing`` extra)."""

    @model_validator(mode="after")
    def _default_checkpoint_url(self) -> Settings:
        if not self.checkpoint_url:
            self.checkpoint_url = f"sqlite:///{self.data_dir / 'checkpoints.db'}"
        return self

    # Tool engine: timeouts, result cache, ETA history and per-tool stats.
    tool_timeout_s: float = Field(default=120.0, gt=0)
    """A tool call running longer is stopped and the model told so (per tool: ``timeout_s``)."""
    tool_max_output_bytes: int = Field(default=65_536, ge=1024)
    """Bytes of a tool's result that enter the thread (UTF-8, content and artifact), the rest cut
    with a note saying so (per tool: ``max_output_bytes``). The default, about 16,000 tokens, is
    half of ``memory_max_tokens``' default, so a result leaves room for the rest of the turn."""
    cache_url: str = ""
    """Where cached results, recorded results, durations and stats live: ``memory://``,
    ``sqlite:///path.db`` or ``redis://host:6379/0`` (the ``redis`` extra; shared by replicas);
    unset: ``tool_engine.db`` in ``data_dir``."""
    cache_ttl_s: float = Field(default=3600.0, gt=0)
    """How long a cacheable tool's result is reused (per tool: ``cache_ttl_s``)."""
    cache_max_entries: int = Field(default=10_000, ge=1)
    """Cached results kept; past this the oldest are evicted."""

    @model_validator(mode="after")
    def _default_cache_url(self) -> Settings:
        if not self.cache_url:
            self.cache_url = f"sqlite:///{self.data_dir / 'tool_engine.db'}"
        return self

    # Checkpoint storage (persistence/retention.py, persistence/checkpoint.py): docs/guarantees.md.
    retention_keep_checkpoints: int = Field(default=20, ge=0)
    """Newest checkpoints kept per thread by the background retention and ``agent-ng prune`` (0: all)."""
    retention_thread_ttl_s: float = Field(default=0, ge=0)
    """Threads idle (no new checkpoint) this long are deleted (0: never)."""
    retention_interval_s: float = Field(default=300, gt=0)
    """Seconds between background retention passes (one also runs when the checkpointer opens)."""
    checkpoint_lock_url: str = ""
    """A direct ``postgresql://`` URL for the thread locks when ``checkpoint_url`` goes through a
    transaction pooler (PgBouncer): advisory locks need a session (default: ``checkpoint_url``)."""
