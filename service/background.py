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
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from agent_ng.contract import EventType
from agent_ng.graph.events import AgentEvent, Part
from agent_ng.service.event_log import EventLog
from agent_ng.service.runner import Runner

log = logging.getLogger("agent_ng.service")

Record = Callable[[AgentEvent | Part], Iterable[dict[str, Any]]]
"""What a run writes to its log for each item; the entries for a ``run_end`` end with one
whose ``"type"`` is ``"run_end"`` (the log's readers stop there)."""


def events_only(item: AgentEvent | Part) -> list[dict[str, Any]]:
    """The default ``Record``: each ``AgentEvent``'s data, no ``Part``."""
    return [item.to_dict()] if type(item) is AgentEvent else []


@dataclass
class BackgroundRuns:
    """The runs of this replica, each a task writing its events to ``events``."""

    runner: Runner
    events: EventLog
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _listener: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        """Cancel the runs of this replica that another replica is asked to cancel."""
        requests = await self.events.cancel_requests()
        self._listener = asyncio.create_task(self._cancel_each(requests))

    async def _cancel_each(self, requests: AsyncIterator[str]) -> None:
        async with aclosing(requests):
            async for run_id in requests:
                self.cancel_soon(run_id)

    async def start(
        self,
        thread_id: str,
        input: Any,
        run_config: dict[str, Any] | None = None,
        *,
        record: Record | None = None,
        run_id: str | None = None,
        **stream_kwargs: Any,
    ) -> str:
        """Start a run on ``thread_id`` (it waits its turn on a busy thread); returns its id.

        ``input`` and ``stream_kwargs`` are ``Runner.events``'s; ``record`` turns each item
        into the log's entries (default ``events_only``), also the ``run_end`` written for a
        run cancelled or cut off by its log; ``run_id`` (a UUID's text) is chosen by the caller,
        or made here.
        """
        run_uuid = UUID(run_id) if run_id else uuid4()
        key = str(run_uuid)
        await self.events.open(key, thread_id)
        config = {**(run_config or {}), "run_id": run_uuid}
        write = self._write(key, thread_id, input, config, record or events_only, stream_kwargs)
        task = asyncio.create_task(write)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))
        return key

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

    def cancel_soon(self, run_id: str) -> None:
        """Cancel without waiting (from a response that is itself being torn down)."""
        if task := self._tasks.get(run_id):
            task.cancel()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait([self._listener])
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
    ) -> None:
        last: AgentEvent | None = None
        entries: list[dict[str, Any]] = []
        logged = 0
        try:
            items = self.runner.events(thread_id, input, config, **stream_kwargs)
            async with aclosing(items):
                async for item in items:
                    if type(item) is AgentEvent:
                        last = item
                    entries, logged = list(record(item)), 0
                    for entry in entries:
                        await self.events.append(run_id, entry)
                        logged += 1
        except asyncio.CancelledError:
            for entry in entries[logged:]:  # stopped mid-append: the thread keeps it, so must the log
                await self._append(run_id, thread_id, entry)
            if last is not None and last.type == EventType.RUN_END:
                return
            await self._end(run_id, thread_id, record, last, status="cancelled")
            log.info("run %s on thread %s cancelled", run_id, thread_id)
        except Exception as e:  # the log failed (Redis gone): the run was stopped and settled
            log.exception("run %s on thread %s stopped: its event log failed", run_id, thread_id)
            await self._end(run_id, thread_id, record, last, status="error", error=one_line(e))

    async def _end(
        self, run_id: str, thread_id: str, record: Record, last: AgentEvent | None, **fields: Any
    ) -> None:
        """Close the run's log with a ``run_end``; when the log cannot take it either, its
        readers end their streams themselves (``agent_ng.service.runs.sse_events``)."""
        end = AgentEvent(EventType.RUN_END, run_id, thread_id, last.t if last else 0.0, **fields)
        try:
            entries = list(record(end))
        except Exception as e:
            log.warning("run %s on thread %s: its run_end could not be recorded: %s", run_id, thread_id, e)
            entries = [end.to_dict()]
        for entry in entries:
            await self._append(run_id, thread_id, entry)

    async def _append(self, run_id: str, thread_id: str, entry: dict[str, Any]) -> None:
        try:
            await self.events.append(run_id, entry)
        except Exception as e:
            log.warning("run %s on thread %s: its %s was not logged: %s", run_id, thread_id, entry.get("type"), e)


def one_line(error: BaseException) -> str:
    """``error`` as the one line a ``run_end`` carries."""
    return " ".join(f"{type(error).__name__}: {error}".split())
