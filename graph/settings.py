"""Settings from the environment (and a ``.env`` file), in one place.

Model: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``AGENT_MODEL``. Everything else is
``AGENT_*``: ``AGENT_CHECKPOINT_URL``, ``AGENT_MAX_CONCURRENCY``, ``AGENT_MAX_STEPS``,
``AGENT_DATA_DIR``, ``AGENT_SYSTEM_PROMPT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_", env_file=".env", extra="ignore")

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "AGENT_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "AGENT_OPENAI_BASE_URL")
    )
    model: str = "gpt-4o-mini"
    system_prompt: str = (
        "You are agent-ng, a helpful assistant. Use the tools when they help; when several "
        "are needed, call them together in one turn so they run in parallel."
    )

    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir("agent-ng")))
    checkpoint_url: str = ""
    """``memory://``, ``sqlite:///path.db`` (default: a file in ``data_dir``) or ``postgresql://...``."""

    max_concurrency: int = Field(default=3, ge=1)
    """Tools running at once in one step; per run: ``config["max_concurrency"]``."""
    max_steps: int = Field(default=20, ge=1)
    """Model turns per user message before the agent stops with a plain answer."""

    # MCP tools and tracing (README: "MCP tools", "Tracing")
    mcp_config: Path | None = None
    """An ``mcpServers`` JSON file whose servers' tools join the built-in ones."""
    tracing: Literal["off", "otlp"] = "off"
    """``otlp``: OpenTelemetry spans to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the ``tracing`` extra)."""

    @model_validator(mode="after")
    def _default_checkpoint_url(self) -> Settings:
        if not self.checkpoint_url:
            self.checkpoint_url = f"sqlite:///{self.data_dir / 'checkpoints.db'}"
        return self
