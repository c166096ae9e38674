"""Runs that go on without a client: each one a task writing its events to the event log.

Every run the service streams is started here, so its events outlive the connection that
asked for it: the client reads them back from the log (``agent_ng.service.event_log``), and so can a
client that joins later or reconnects. A run is cancelled by ``cancel`` (the cancel route, or
a streaming client that went away with ``on_disconnect="cancel"``), or by another replica's
cancel route through the log (``listen``); it then settles as any stop does
(``agent_ng.service.runner``) and its log ends with ``run_end`` status ``cancelled``. A run
whose log fails (Redis gone) is stopped and settled the same way, and ends ``error`` in the log
if the log takes it; its readers end their streams with that ``run_end`` either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from agent_ng.contract import EventType
from agent_ng.graph.events import AgentEvent
from agent_ng.service.event_log import EventLog
from agent_ng.service.runner import Runner

log = logging.getLogger("agent_ng.service")


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
        self, thread_id: str, question: str, run_config: dict[str, Any] | None = None
    ) -> str:
        """Start a run on ``thread_id`` (it waits its turn on a busy thread); returns its id."""
        run_id = uuid4()
        await self.events.open(str(run_id), thread_id)
        config = {**(run_config or {}), "run_id": run_id}
        task = asyncio.create_task(self._write(str(run_id), thread_id, question, config))
        self._tasks[str(run_id)] = task
        task.add_done_callback(lambda _: self._tasks.pop(str(run_id), None))
        return str(run_id)

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
        self, run_id: str, thread_id: str, question: str, config: dict[str, Any]
    ) -> None:
        last: AgentEvent | None = None
        logged = True
        try:
            async with aclosing(self.runner.events(thread_id, question, config)) as events:
                async for last in events:
                    logged = False
                    await self.events.append(run_id, last.to_dict())
                    logged = True
        except asyncio.CancelledError:
            if last is not None and not logged:  # stopped mid-append: the thread keeps it, so must the log
                await self._append(run_id, thread_id, last)
            if last is not None and last.type == EventType.RUN_END:
                return
            await self._end(run_id, thread_id, last, status="cancelled")
            log.info("run %s on thread %s cancelled", run_id, thread_id)
        except Exception as e:  # the log failed (Redis gone): the run was stopped and settled
            log.exception("run %s on thread %s stopped: its event log failed", run_id, thread_id)
            await self._end(run_id, thread_id, last, status="error", error=one_line(e))

    async def _end(self, run_id: str, thread_id: str, last: AgentEvent | None, **fields: Any) -> None:
        """Close the run's log with a ``run_end``; when the log cannot take it either, its
        readers end their streams themselves (``agent_ng.service.runs.sse_events``)."""
        end = AgentEvent(EventType.RUN_END, run_id, thread_id, last.t if last else 0.0, **fields)
        await self._append(run_id, thread_id, end)

    async def _append(self, run_id: str, thread_id: str, event: AgentEvent) -> None:
        try:
            await self.events.append(run_id, event.to_dict())
        except Exception as e:
            log.warning("run %s on thread %s: its %s was not logged: %s", run_id, thread_id, event.type, e)


def one_line(error: BaseException) -> str:
    """``error`` as the one line a ``run_end`` carries."""
    return " ".join(f"{type(error).__name__}: {error}".split())
