"""Python's garbage collector, set for a process that streams many runs at once.

A streamed token allocates a handful of objects that die young, while every open run keeps a
state, tasks and messages alive. With Python's default thresholds the young collections come
every 700 allocations and keep promoting the live runs, so full collections come often and
scan every one of them: under 1,000 concurrent streams the collector took about 40% of the
server's CPU (bench/README.md, "Service"). ``tune_collector`` keeps start-up objects out of
its way (``gc.freeze``), keeps the young collections short and makes the others rare; cycles
are still collected.

It changes process-wide settings, so the process's entry point calls it (the ``agent-ng``
command does, ``serve`` included); an application embedding the graph or the service should
call it once its own start-up is done.
"""

from __future__ import annotations

import gc

THRESHOLDS = (2_000, 250, 100)
"""Allocations before a young collection, and young / middle collections before the next
generation's (Python's default: ``(700, 10, 10)``). A young collection stops the loop for as
long as it scans the young objects, and every token due meanwhile waits: 2,000 makes that a
few ms where 10,000 made it 12-20 (a stream's gap p99 at 200 streams 90-128 ms, now 57-59:
bench/README.md, "Scaling", session 10). The middle and full collections come after as many
allocations as before (500,000 and 50 million), so as rarely."""


def tune_collector() -> None:
    """Freeze start-up objects and set ``THRESHOLDS`` (the module docstring says why)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
