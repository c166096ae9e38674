"""Deleting checkpoints from the PostgreSQL saver's tables, for retention's prune and a run's rollback.

LangGraph's PostgreSQL saver keeps a checkpoint in three tables: the checkpoint itself, its
pending writes, and the blobs of its channels' values, which checkpoints share by version. So a
checkpoint goes with its writes, and a blob only when no checkpoint left in its thread and
namespace still points at its version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Run = Callable[[str, tuple], Awaitable[list[dict[str, Any]]]]
"""Runs one statement on the caller's cursor, in the caller's transaction; returns its rows."""


async def delete_checkpoints(run: Run, thread_id: str, ns: str, ids: Sequence[str]) -> None:
    """Delete the checkpoints ``ids`` of ``thread_id``'s namespace ``ns``, their writes, and the
    blobs that only they used."""
    await run(
        "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s)",
        (thread_id, ns, list(ids)),
    )
    freed = await run(
        "DELETE FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s) "
        "RETURNING checkpoint -> 'channel_versions' AS v",
        (thread_id, ns, list(ids)),
    )
    referenced = await run(
        "SELECT checkpoint -> 'channel_versions' AS v FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = %s",
        (thread_id, ns),
    )
    garbage = versions(freed) - versions(referenced)
    for channel in {c for c, _ in garbage}:
        await run(
            "DELETE FROM checkpoint_blobs WHERE thread_id = %s AND checkpoint_ns = %s "
            "AND channel = %s AND version = ANY(%s)",
            (thread_id, ns, channel, [v for c, v in garbage if c == channel]),
        )


def versions(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The ``(channel, version)`` blobs that the ``channel_versions`` in ``rows`` point at."""
    return {(channel, str(version)) for r in rows for channel, version in (r["v"] or {}).items()}
