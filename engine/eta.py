"""ETA: how long a tool will take, from how long its recent successful runs took.

    Lifecycle(expected_s=expected_duration(store))

The estimate is the median of the tool's last ``SAMPLES`` successful run durations (recorded
by ``agent_ng.engine.tool_stats``), and None below ``MIN_SAMPLES``. A median rather than a mean or an
EWMA because tool durations are skewed by rare slow calls (a cold disk, a huge input): one
100x outlier drags a mean or an EWMA far off for many calls and moves a median not at all,
while a window of 20 still follows a lasting change within about ten calls. It does not know
the arguments, so a tool whose cost depends on its input (``count_primes``) is estimated by
its typical call; the progress events correct that as the call reports how far it is (see
``agent_ng.tools.progress.remaining_s``). Calls of one tool that start together share one read.
"""

from __future__ import annotations

import asyncio
import logging
import statistics

from agent_ng.engine.store import ToolStore
from agent_ng.engine.tool_calls import Estimate

SAMPLES = 20
MIN_SAMPLES = 3

log = logging.getLogger(__name__)


def expected_duration(store: ToolStore) -> Estimate:
    """The ``Estimate`` for ``Lifecycle``: a tool's typical duration, None until known."""

    reading: dict[str, asyncio.Future[float | None]] = {}

    async def read(tool: str) -> float | None:
        try:
            durations = await store.durations(tool, SAMPLES)
        except Exception:
            log.warning("reading %s's durations failed; no ETA", tool, exc_info=True)
            return None
        return statistics.median(durations) if len(durations) >= MIN_SAMPLES else None

    async def expected_s(tool: str) -> float | None:
        future = reading.get(tool)
        if future is None:
            future = reading[tool] = asyncio.ensure_future(read(tool))
            future.add_done_callback(lambda _: reading.pop(tool, None))
        return await asyncio.shield(future)

    return expected_s
