"""Runs shared by the replicas: records in PostgreSQL, each run held by one replica under a lease.

With a PostgreSQL checkpointer a background or streamed run is first a row of the run table
(``agent_ng.persistence.run_table``), then claimed by one replica, the one that asked when it has
room, else whichever has room first. The holder renews its leases every third of
``AGENT_RUN_LEASE_S``. When a replica dies or freezes its leases lapse, and another replica's
claim takes each run over (``attempt`` + 1) and runs it on from its last checkpoint with the tool
results recorded there. Three fences keep a frozen holder that wakes up from writing to a run it
lost:

- its checkpoint writes run in one transaction with a check that it still holds the run
  (``agent_ng.persistence.fencing``), so they are refused once the run is taken over;
- its event log appends carry its token (``<replica>:<attempt>``), refused once the new holder
  set its own (``EventLog.fence``);
- it stops writing by its own clock once the lease it last renewed has lapsed (``valid``), which
  covers the moment between the new holder's claim and its token.

The taker also evicts the old holder's database sessions (``PostgresRunTable.evict``) so that
the thread lock they held is released at once, even if that replica is only frozen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent_ng.persistence.replica import REPLICA_ID

if TYPE_CHECKING:
    from agent_ng.persistence.run_table import PostgresRunTable, RunRow

log = logging.getLogger("agent_ng.service")

_serde = JsonPlusSerializer()
PRUNE_EVERY_S = 600.0
"""How often a replica deletes the records of runs that ended long ago."""


def dumps(spec: dict[str, Any]) -> bytes:
    """A run's input, config and stream arguments as the table keeps them (LangGraph's serializer:
    messages and ``Command``s come back as they were)."""
    kind, data = _serde.dumps_typed(spec)
    return kind.encode() + b"\n" + data


def loads(payload: bytes) -> dict[str, Any]:
    """What ``dumps`` kept."""
    kind, _, data = payload.partition(b"\n")
    return _serde.loads_typed((kind.decode(), data))


@dataclass
class SharedRuns:
    """This replica's side of the run table: its claims, its leases and what it lost."""

    table: PostgresRunTable
    lease_s: float
    poll_s: float
    max_attempts: int
    keep_s: float = 86_400.0
    """How long the record of an ended run is kept (for ``GET`` of its status)."""
    holder: str = REPLICA_ID
    _renewed: float = 0.0
    _claimed: dict[str, float] = field(default_factory=dict)
    _claiming: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _loops: list[asyncio.Task[None]] = field(default_factory=list)

    def token(self, row: RunRow) -> str:
        """The run's event log fence token for this claim."""
        return f"{self.holder}:{row.attempt}"

    def valid(self, run_id: str) -> bool:
        """Whether this replica's lease on ``run_id`` still holds by its own clock (the lease
        began when the claim or renewal that set it was sent, so this lapses first)."""
        return monotonic() < max(self._claimed.get(run_id, 0.0), self._renewed) + self.lease_s

    async def claim(self, run_id: str | None = None) -> RunRow | None:
        sent = monotonic()
        self._claiming += 1
        try:
            row = await self.table.claim(self.holder, run_id=run_id)
        finally:
            self._claiming -= 1
        if row is not None:
            self._claimed[row.run_id] = sent
        return row

    def claiming(self) -> bool:
        """Whether a claim is under way (its run may be held in the table and not known here yet)."""
        return self._claiming > 0

    def holds(self, run_id: str) -> bool:
        """Whether this replica claimed ``run_id`` (and has not let it go)."""
        return run_id in self._claimed

    def claimed(self) -> list[str]:
        return list(self._claimed)

    def forget(self, run_id: str) -> None:
        self._claimed.pop(run_id, None)

    def wake(self) -> None:
        """Look for a run to claim now (a slot or a thread was freed)."""
        self._wake.set()

    def start(
        self,
        launch: Callable[[RunRow], Awaitable[None]],
        room: Callable[[], bool],
        held: Callable[[dict[str, bool]], Awaitable[None]],
    ) -> None:
        """Claim runs while ``room()`` and launch each; renew the leases, telling ``held`` which
        runs this replica still holds (and whether each was asked to cancel)."""
        self._loops = [
            asyncio.create_task(self._claim_forever(launch, room)),
            asyncio.create_task(self._renew_forever(held)),
        ]

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []

    async def _claim_forever(self, launch: Callable[[RunRow], Awaitable[None]], room: Callable[[], bool]) -> None:
        while True:
            try:
                while room() and (row := await self.claim()) is not None:
                    await launch(row)
            except Exception as e:
                log.warning("run claims: %s", e)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass

    async def _renew_forever(self, held: Callable[[dict[str, bool]], Awaitable[None]]) -> None:
        pruned = monotonic()
        while True:
            sent = monotonic()
            if sent - pruned > PRUNE_EVERY_S:
                pruned = sent
                with suppress(Exception):
                    await self.table.prune(self.keep_s)
            try:
                runs = await self.table.renew(self.holder)
                self._renewed = sent
                await held(runs)
            except Exception as e:
                log.warning("run leases not renewed: %s", e)
            await asyncio.sleep(self.lease_s / 3)
