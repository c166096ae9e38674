"""Fencing: a replica whose run was taken over can no longer write it.

A replica that is only slow (a long GC pause, a frozen process) may wake up after another one
took its run over. Its lease has lapsed but it does not know yet, so every write it makes for
the run carries a ``Fence`` (the run, its holder, the attempt) and the store refuses the write
with ``FencedError`` unless the run's record still names that holder and attempt, checked in
the same transaction as the write (``FENCE_SQL``, ``agent_ng.persistence.pg_reconnect``) or the
same Redis script (``agent_ng.service.event_log``).

The fence travels in a context variable, set in the run's task before it runs the graph:
LangGraph copies the context into its node tasks and its background checkpoint writer, so the
checkpointer finds it without anything passed through the graph::

    with fenced(Fence(run_id, REPLICA_ID, attempt)):
        await graph.ainvoke(inputs, config)     # FencedError once another replica took the run
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fence:
    """Who may write a run: its holder (a ``REPLICA_ID``) in its ``attempt``."""

    run_id: str
    holder: str
    attempt: int


FENCE_SQL = (
    "SELECT 1 FROM agent_ng_runs WHERE run_id = %s AND holder = %s AND attempt = %s"
    " AND status = 'running' AND lease_until > now() FOR SHARE"
)
"""The check, on the run table (``agent_ng.persistence.run_table``), run first in the transaction
of a write with (run_id, holder, attempt): no row means the run was taken over, ended, or its
lease lapsed (on the database's clock: whoever claims it next must find it as it was then), and
the write must not happen; a row means no takeover can claim the run until the transaction ends.
It lives here, not with the table: ``run_table`` uses ``pg_reconnect``, which needs the check."""

FENCE: ContextVar[Fence | None] = ContextVar("agent_ng_fence", default=None)
"""The fence of the run this task is writing; ``None``: the writes are not fenced."""


class FencedError(RuntimeError):
    """The run was taken over by another replica; this write was refused and nothing was written."""

    def __init__(self, run_id: str, attempt: int | None = None) -> None:
        which = "this attempt" if attempt is None else f"attempt {attempt}"
        super().__init__(
            f"run {run_id} was taken over by another replica ({which} is no longer its holder's); "
            "nothing was written"
        )
        self.run_id = run_id
        self.attempt = attempt


@contextmanager
def fenced(fence: Fence) -> Iterator[Fence]:
    """Fence the writes made in this context (and the tasks started from it) with ``fence``."""
    token = FENCE.set(fence)
    try:
        yield fence
    finally:
        FENCE.reset(token)
