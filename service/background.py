"""Runs that go on without a client: each one a task writing its events to the event log.

Every run the service streams is started here, so its events outlive the connection that
asked for it: the client reads them back from the log (``agent_ng.service.event_log``), and so can a
client that joins later or reconnects. A run is cancelled by ``cancel`` (the cancel route, or
a streaming client that went away with ``on_disconnect="cancel"``), or by another replica's
cancel route through the log (``listen``); it then settles as any stop does
(``agent_ng.service.runner``) and its log ends with ``run_end`` status ``cancelled``. A run
whose log fails (Redis gone) is stopped and settled the same way, and ends ``error`` in the log
if the log takes it; its readers end their streams with that ``run_end`` either way.

What a run writes is the caller's choice (``record``): by default each ``AgentEvent``'s data;
the LangGraph Server API writes its own frames (``agent_ng.service.langgraph_server.frames``).
Whatever it writes, the log of a run ends with a ``run_end`` entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID, uuid4

from langgraph.pregel import Pregel

from agent_ng.contract import EventType
from agent_ng.graph.events import RUN_ATTEMPT, AgentEvent, Part, shielded
from agent_ng.persistence.fencing import Fence, FencedError, fenced
from agent_ng.persistence.thread_lock import locks_of
from agent_ng.service.event_log import END, EventLog
from agent_ng.service.runner import Runner
from agent_ng.service.shared_runs import SharedRuns, dumps, loads

if TYPE_CHECKING:
    from agent_ng.persistence.run_table import RunRow

log = logging.getLogger("agent_ng.service")

Record = Callable[[AgentEvent | Part], Iterable[dict[str, Any]]]
"""What a run writes to its log for each item; the entries for a ``run_end`` end with one
whose ``"type"`` is ``"run_end"`` (the log's readers stop there)."""


ENDED_KEPT = 10_000
"""How many ended runs' statuses a process without the run table keeps."""
NATIVE = "native"
"""The run table's kind of a run of the native routes (its events are ``AgentEvent``s)."""


Kind = Callable[[str, Any], Record]
"""The ``Record`` of a run of one kind, from the run's id and the ``spec`` it was started with."""


def events_only(item: AgentEvent | Part) -> list[dict[str, Any]]:
    """The default ``Record``: each ``AgentEvent``'s data, no ``Part``."""
    return [item.to_dict()] if type(item) is AgentEvent else []


class OverloadedError(RuntimeError):
    """This replica runs as many runs as it may (``AGENT_MAX_RUNS``): a streamed run is refused,
    nothing of it written, to be asked again after ``retry_after_s`` (503 with ``Retry-After``)."""

    def __init__(self, max_runs: int, retry_after_s: int) -> None:
        super().__init__(f"this replica runs {max_runs} runs already (AGENT_MAX_RUNS); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class BackgroundRuns:
    """The runs of this replica, each a task writing its events to ``events``.

    At most ``max_runs`` run at once; past it a run waits its turn (in this process, or in the
    run table every replica claims from when ``shared``), or is refused with ``OverloadedError``
    when its caller says so. With ``shared`` (``agent_ng.service.shared_runs``) a run of a
    registered kind (not one with a ``record`` of its own) is a record every replica sees,
    taken over when this replica dies.
    """

    runner: Runner
    events: EventLog
    max_runs: int = 32
    retry_after_s: int = 2
    shared: SharedRuns | None = None
    draining: Callable[[], bool] = lambda: False
    kinds: dict[str, Kind] = field(default_factory=lambda: {NATIVE: lambda run_id, spec: events_only})
    """How each kind of run writes its log (``start``); the LangGraph Server API adds its own."""
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _lost: set[str] = field(default_factory=set)
    _unrecorded: dict[str, tuple[Fence, str, str | None]] = field(default_factory=dict)
    _ended: OrderedDict[str, tuple[str, str | None]] = field(default_factory=OrderedDict)
    _slots: asyncio.Semaphore | None = None
    _waiting: int = 0
    _foreground: int = 0
    _listener: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.max_runs)

    async def listen(self) -> None:
        """Cancel the runs of this replica that another replica is asked to cancel; with
        ``shared``, claim runs from the table and renew their leases."""
        requests = await self.events.cancel_requests()
        self._listener = asyncio.create_task(self._cancel_each(requests))
        if self.shared is not None:
            self.shared.start(self._launch, self.room, self._held)

    async def _cancel_each(self, requests: AsyncIterator[str]) -> None:
        async with aclosing(requests):
            async for run_id in requests:
                self.cancel_soon(run_id)

    def room(self) -> bool:
        """Whether this replica may start a run now."""
        return not self.draining() and len(self._tasks) + self._foreground < self.max_runs

    @asynccontextmanager
    async def foreground(self) -> AsyncIterator[None]:
        """Hold one of ``max_runs`` slots for a run streamed straight to its client rather than
        through the log (AG-UI), waiting for one if there is none."""
        async with self._slot():
            self._foreground += 1
            try:
                yield
            finally:
                self._foreground -= 1

    def admit(self, overload: Literal["queue", "reject"]) -> None:
        """Refuse a run with ``OverloadedError`` when it may not wait (``"reject"``) and there
        is no room; before anything of it is done."""
        if overload == "reject" and not self.room():
            self.runner.metrics.runs_rejected.inc()
            raise OverloadedError(self.max_runs, self.retry_after_s)

    async def start(
        self,
        thread_id: str,
        input: Any,
        run_config: dict[str, Any] | None = None,
        *,
        record: Record | None = None,
        kind: str = NATIVE,
        spec: Any = None,
        run_id: str | None = None,
        overload: Literal["queue", "reject"] = "queue",
        **stream_kwargs: Any,
    ) -> str:
        """Start a run on ``thread_id`` (it waits its turn on a busy thread); returns its id.

        ``input`` and ``stream_kwargs`` are ``Runner.events``'s. What the run writes to its log
        is its ``kind``'s (``kinds``: made from the run id and ``spec``; by default each
        ``AgentEvent``), also the ``run_end`` written for a run cancelled or cut off by its log;
        a run of a registered kind can be taken over by another replica, which makes it the
        same way. ``record`` instead writes a run of this process only. ``run_id`` (a UUID's
        text) is chosen by the caller, or made here. A run past ``max_runs`` waits, or raises
        ``OverloadedError`` with ``overload="reject"``.
        """
        self.admit(overload)
        run_uuid = UUID(run_id) if run_id else uuid4()
        key = str(run_uuid)
        await self.events.open(key, thread_id)
        if self.shared is not None and record is None:
            payload = {"input": input, "config": run_config or {}, "stream_kwargs": stream_kwargs, "spec": spec}
            await self.shared.table.add(key, thread_id, kind, dumps(payload))
            if self.room() and (row := await self.shared.claim(key)) is not None:
                await self._launch(row)
            return key
        config = {**(run_config or {}), "run_id": run_uuid}
        record = record or self.kinds[kind](key, spec)
        self._spawn(key, self._write(key, thread_id, input, config, record, stream_kwargs))
        return key

    def _spawn(self, run_id: str, write: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(write)
        self._tasks[run_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(run_id, None)
            self._lost.discard(run_id)
            if self.shared is not None:
                self.shared.forget(run_id)
                self.shared.wake()

        task.add_done_callback(done)
        return task

    async def _launch(self, row: RunRow) -> None:
        """Start a run this replica claimed from the table, in a task of its own (``_take``), so
        that a takeover's waits do not hold up the next claim."""
        task = self._spawn(row.run_id, self._take(row))
        if row.cancel_requested:
            task.cancel()

    async def _take(self, row: RunRow) -> None:
        """Run a claimed run: its first attempt, or a takeover that goes on from the run's last
        checkpoint (its recorded tool results kept) once the old holder's thread lock is free."""
        assert self.shared is not None
        spec, token = loads(row.payload), self.shared.token(row)
        fence = Fence(row.run_id, self.shared.holder, row.attempt)
        input = spec["input"]
        try:
            await self.events.fence(row.run_id, token)
            if row.attempt > self.shared.max_attempts:
                error = f"the run was stopped with its replica {row.attempt - 1} times; not tried again"
                await self._end(row.run_id, row.thread_id, events_only, None, token, fence, status="error", error=error)
                return
            if row.attempt > 1:
                self.runner.metrics.run_takeovers.inc()
                log.info("run %s on thread %s taken over (attempt %d, from %s)", row.run_id, row.thread_id,
                         row.attempt, row.previous_holder or "a replica that let it go")
                if row.previous_holder:
                    await self.shared.table.evict(row.previous_holder)
                await locks_of(self.runner.graph.checkpointer).free(row.thread_id, self.shared.lease_s)
                if await ran(self.runner.graph, row.thread_id, row.run_id):
                    input = None
        except asyncio.CancelledError:
            if row.run_id not in self._lost:  # asked to cancel before it began
                await self._end(row.run_id, row.thread_id, events_only, None, token, fence, status="cancelled")
            return
        config = {**spec["config"], "run_id": UUID(row.run_id)}
        config["metadata"] = {**config.get("metadata", {}), "run_id": row.run_id, RUN_ATTEMPT: row.attempt}
        record = self.kinds[row.kind](row.run_id, spec.get("spec"))
        await self._write(row.run_id, row.thread_id, input, config, record, spec["stream_kwargs"], fence, token)

    async def _held(self, runs: dict[str, bool]) -> None:
        """After a lease renewal: stop the runs this replica lost, cancel those asked to, record
        the ends the database missed, and let go of a run held with nothing running it."""
        assert self.shared is not None
        for run_id, task in list(self._tasks.items()):
            if run_id in runs:
                if runs[run_id]:
                    task.cancel()
            elif self.shared.holds(run_id) and run_id not in self._lost:
                self._lose(run_id)
        for run_id in runs.keys() - self._tasks.keys():
            if run_id in self._unrecorded:
                await self._finish(*self._unrecorded.pop(run_id))
            elif not self.shared.holds(run_id) and not self.shared.claiming():  # nor being claimed
                await self.shared.table.release(self.shared.holder, run_ids=[run_id])

    def _lose(self, run_id: str) -> None:
        """Stop a run another replica holds now, writing nothing more (the fences refuse it anyway)."""
        log.warning("run %s was taken over by another replica; stopping it here", run_id)
        self._lost.add(run_id)
        if task := self._tasks.get(run_id):
            task.cancel()

    async def busy(self, thread_id: str) -> bool:
        """Whether a run is ahead of a new one on ``thread_id`` (on any replica, when shared)."""
        if self.shared is not None:
            return await self.shared.table.busy(thread_id)
        return self.runner.busy(thread_id)

    def held(self) -> int:
        """Runs this replica has started (or queued in this process) and not ended."""
        return len(self._tasks) + self._foreground

    def running(self, run_id: str) -> bool:
        return run_id in self._tasks

    async def cancel(self, run_id: str) -> bool:
        """Cancel the run and wait until it has settled; ``False`` when it is not running here."""
        task = self._tasks.get(run_id)
        if task is None:
            return False
        task.cancel()
        await asyncio.wait([task])
        return True

    async def cancel_queued(self, run_id: str, thread_id: str) -> bool:
        """Cancel a run no replica has claimed yet (it ends ``cancelled`` at once), or mark a
        claimed one so that whoever holds it, or takes it over, cancels it; ``True`` when it
        ended here."""
        if self.shared is None:
            return False
        row = await self.shared.table.request_cancel(run_id)
        if row is None or row.status != "cancelled":
            return False
        await self._end(run_id, thread_id, events_only, None, status="cancelled")
        return True

    def cancel_soon(self, run_id: str) -> None:
        """Cancel without waiting (from a response that is itself being torn down)."""
        if task := self._tasks.get(run_id):
            task.cancel()

    def queued(self) -> int:
        """Runs of this process waiting for a slot (the table counts the replicas' queue)."""
        return self._waiting

    async def wait(self, within_s: float) -> None:
        """Let the runs of this replica end on their own, for at most ``within_s`` (a drain)."""
        if self._tasks and within_s > 0:
            await asyncio.wait(list(self._tasks.values()), timeout=within_s)

    async def close(self) -> None:
        """Stop this replica's runs: hand the shared ones over to the other replicas (their
        leases released first, so nothing more is written for them here), cancel the rest."""
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait([self._listener])
        if self.shared is not None:
            await self.shared.stop()
            try:
                released = await self.shared.table.release(self.shared.holder)
            except Exception as e:
                log.warning("runs not handed over (their leases lapse instead): %s", e)
                released = self.shared.claimed()
            for run_id in released:
                self._lose(run_id)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _write(
        self,
        run_id: str,
        thread_id: str,
        input: Any,
        config: dict[str, Any],
        record: Record,
        stream_kwargs: dict[str, Any],
        fence: Fence | None = None,
        token: str | None = None,
    ) -> None:
        """Run the run (once it has a slot), logging what ``record`` makes of each item. A shared
        run's end is recorded in the run table just after its ``run_end`` reaches the log: the
        client is told first, without waiting on the database (which may be what failed)."""
        last: AgentEvent | None = None
        entries: list[dict[str, Any]] = []
        logged = 0
        with fenced(fence) if fence else nullcontext():
            try:
                async with self._slot():
                    items = self.runner.events(thread_id, input, config, **stream_kwargs)
                    async with aclosing(items):
                        async for item in items:
                            if type(item) is AgentEvent:
                                last = item
                            entries, logged = list(record(item)), 0
                            for entry in entries:
                                if entry.get("type") != END:  # an end is told even past the lease
                                    self._check(run_id)
                                await self.events.append(run_id, entry, token)
                                logged += 1
                            if last is item and item.type == EventType.RUN_END:
                                await self._ended_as(run_id, fence, item.status or "done", item.error)
            except asyncio.CancelledError:
                if run_id in self._lost:
                    return
                for entry in entries[logged:]:  # stopped mid-append: the thread keeps it, so must the log
                    await self._append(run_id, thread_id, entry, token)
                if last is None or last.type != EventType.RUN_END:
                    await self._end(run_id, thread_id, record, last, token, fence, status="cancelled")
                    log.info("run %s on thread %s cancelled", run_id, thread_id)
                elif fence is not None:  # stopped between its run_end and its record
                    await self._ended_as(run_id, fence, last.status or "done", last.error)
            except FencedError:
                self._lost.add(run_id)
                log.warning("run %s on thread %s was taken over by another replica; stopped here", run_id, thread_id)
            except Exception as e:  # the log failed (Redis gone): the run was stopped and settled
                log.exception("run %s on thread %s stopped: its event log failed", run_id, thread_id)
                await self._end(run_id, thread_id, record, last, token, fence, status="error", error=one_line(e))

    def _check(self, run_id: str) -> None:
        """Refuse to write a shared run whose lease lapsed by this replica's clock: it may have
        been taken over while this replica was frozen. Its ``run_end`` is written anyway (a run
        that failed when the database went away must say so); the event log's token refuses it
        if another replica holds the run."""
        if self.shared is not None and self.shared.holds(run_id) and not self.shared.valid(run_id):
            raise FencedError(run_id)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of ``max_runs`` slots; a local run waits here for one (counted as queued)."""
        assert self._slots is not None
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def _ended_as(self, run_id: str, fence: Fence | None, status: str, error: str | None) -> None:
        """Note how the run ended: in the run table for a shared run, else in this process."""
        if fence is not None:
            await self._finish(fence, status, error)
            return
        self._ended[run_id] = (status, error)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def describe(self, run_id: str, thread_id: str) -> dict[str, Any] | None:
        """The run's status and attempt (``None`` unless it is a run of ``thread_id``): from the
        run table when shared, else from what this process ran (``running`` until it ends)."""
        if self.shared is not None and (row := await self.shared.table.get(run_id)) is not None:
            if row.thread_id != thread_id:
                return None
            return {"run_id": run_id, "thread_id": thread_id, "status": row.status, "attempt": row.attempt,
                    "error": row.error, "created_at": row.created_at.isoformat(),
                    "updated_at": row.updated_at.isoformat()}
        if await self.events.thread_of(run_id) != thread_id:
            return None
        status, error = self._ended.get(run_id, ("running", None))
        return {"run_id": run_id, "thread_id": thread_id, "status": status, "attempt": 1, "error": error}

    async def _finish(self, fence: Fence, status: str, error: str | None) -> None:
        """Record how the run ended; when the database cannot take it now, the next lease renewal
        that reaches it does (``_held``)."""
        assert self.shared is not None
        try:
            await shielded(self.shared.table.finish(fence.run_id, fence.holder, fence.attempt, status, error))
        except Exception as e:
            log.warning("run %s: its end (%s) is not recorded yet: %s", fence.run_id, status, e)
            self._unrecorded[fence.run_id] = (fence, status, error)

    async def _end(
        self,
        run_id: str,
        thread_id: str,
        record: Record,
        last: AgentEvent | None,
        token: str | None = None,
        fence: Fence | None = None,
        **fields: Any,
    ) -> None:
        """Close the run's log with a ``run_end``, then note how the run ended; when the log
        cannot take it either, its readers end their streams themselves
        (``agent_ng.service.runs.sse_events``)."""
        end = AgentEvent(EventType.RUN_END, run_id, thread_id, last.t if last else 0.0, **fields)
        try:
            entries = list(record(end))
        except Exception as e:
            log.warning("run %s on thread %s: its run_end could not be recorded: %s", run_id, thread_id, e)
            entries = [end.to_dict()]
        for entry in entries:
            await self._append(run_id, thread_id, entry, token)
        await self._ended_as(run_id, fence, end.status or "error", end.error)

    async def _append(self, run_id: str, thread_id: str, entry: dict[str, Any], token: str | None = None) -> None:
        try:
            await self.events.append(run_id, entry, token)
        except Exception as e:
            log.warning("run %s on thread %s: its %s was not logged: %s", run_id, thread_id, entry.get("type"), e)


async def ran(graph: Pregel, thread_id: str, run_id: str) -> bool:
    """Whether the thread's newest checkpoint is the run's own (it started writing; a shared run
    carries its id in its metadata, which LangGraph copies into its checkpoints): a run taken
    over then goes on from there (input ``None``) rather than asking its question again."""
    latest = await graph.checkpointer.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    return latest is not None and str(latest.metadata.get("run_id")) == run_id


def one_line(error: BaseException) -> str:
    """``error`` as the one line a ``run_end`` carries."""
    return " ".join(f"{type(error).__name__}: {error}".split())
