"""``agent-ng prune``: apply the checkpoint retention to every thread now.

    agent-ng prune                       # AGENT_RETENTION_KEEP_CHECKPOINTS / _THREAD_TTL_S
    agent-ng prune --keep 5 --idle-days 30

Runs also prune their own thread when they end (``agent_ng.persistence.retention``); this is for threads
written before, by other processes, or for deleting idle threads now.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import PruneReport, Retention, prune
from agent_ng.settings import Settings

OFF = Retention(keep_checkpoints=0, thread_ttl_s=0)


def prune_command(
    keep: Annotated[int | None, typer.Option(min=0, help="Newest checkpoints kept per thread (0: all).")] = None,
    idle_days: Annotated[
        float | None, typer.Option(min=0, help="Delete threads with no new checkpoint for this many days (0: none).")
    ] = None,
) -> None:
    """Delete old checkpoints (keep the newest per thread) and threads idle past a TTL."""
    settings = Settings()
    retention = Retention(
        settings.retention_keep_checkpoints if keep is None else keep,
        settings.retention_thread_ttl_s if idle_days is None else idle_days * 86400,
    )
    if not retention.enabled:
        typer.echo("nothing to do: --keep 0 and --idle-days 0 keep everything", err=True)
        return
    try:
        report = asyncio.run(run_prune(settings, retention))
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.summary())


async def run_prune(settings: Settings, retention: Retention) -> PruneReport:
    """Prune every thread once; the saver's own background retention is off, so this pass is the only one."""
    async with open_checkpointer(
        settings.checkpoint_url, pool_size=settings.checkpoint_pool_size, retention=OFF
    ) as saver:
        return await prune(saver, retention)
