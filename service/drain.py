"""Graceful drain on SIGTERM: readiness turns 503 at once, the run queue stops claiming.

What uvicorn does on its own when SIGTERM (or SIGINT) arrives: it stops accepting (its listening
socket is closed within 0.1 s, so a new connection is refused), closes the idle keep-alive
connections, lets each busy one finish its response and then closes it, and waits up to
``timeout_graceful_shutdown`` (``AGENT_DRAIN_S``, as ``agent-ng serve`` starts it) for the open
responses, a streamed run's included; whatever is still open then is cancelled, and the app's
lifespan shuts down.

Left alone, sse_starlette would end every open event stream the moment uvicorn is told to exit
(it patches uvicorn's ``handle_exit``): a run's stream would stop mid-answer while its run goes
on. The drain turns that off while installed, so open streams get the whole wait and end with
their ``run_end``; the wait is what bounds them (``agent-ng serve`` passes ``AGENT_DRAIN_S``;
under plain uvicorn pass ``--timeout-graceful-shutdown``, or a stream that never ends holds the
server up).

What the drain adds: ``GET /readyz`` answers 503 from the moment the signal arrives, so a
balancer that checks it (``deploy/haproxy.cfg``) stops sending this replica requests also where
the port is not closed yet (uvicorn's next tick, a check over a connection kept open); the
service's run queue reads ``Drain.draining`` (or awaits
``Drain.started``) and claims no new run meanwhile; the background runs get what is left of the
wait to end on their own (``Drain.left``), then the lifespan hands the runs still going over to
the other replicas. ``/healthz`` stays 200 throughout: the process is alive,
only leaving.

With ``--workers N`` uvicorn's parent process binds the port and hands it to the workers; its own
copy would keep the port open while the workers drain, the kernel queueing new connections no
one answers (a request left hanging, a balancer's check timing out instead of failing fast), so
``Workers`` closes it before it passes SIGTERM on.

uvicorn installs its handlers with ``signal.signal`` (``Server.capture_signals``) before the
lifespan starts and restores what it found after the lifespan has shut down, so the lifespan can
chain a handler of its own in between: ``Drain.install()`` at start-up, ``Drain.uninstall()`` at
shutdown.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from time import monotonic
from types import FrameType
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import AppStatus
from uvicorn.supervisors.multiprocess import Multiprocess

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that start a drain: the ones uvicorn shuts down on."""

router = APIRouter()


WORKER_START_S = 30
"""How long a starting worker may take to answer uvicorn's health check. A worker imports the
agent first (6 s seen on a loaded 2-core machine); uvicorn's default, 5 s, killed and restarted
such workers over and over."""

class Drain:
    """Whether this process is leaving; set by SIGTERM or SIGINT once ``install()``-ed."""

    def __init__(self) -> None:
        self.draining = False
        """True from the signal on: readiness is 503 and no new run is claimed."""
        self.started = asyncio.Event()
        """Set on the event loop once the drain has started, for code that waits for it."""
        self._since: float | None = None
        self._chained: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Chain a handler before the current one (uvicorn's) for SIGTERM and SIGINT.

        Call it on the event loop's thread; off the main thread (where signals cannot be
        handled, e.g. a server run in a test's thread) it does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        AppStatus.disable_automatic_graceful_drain()
        for sig in SIGNALS:
            self._chained[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Put the chained handlers back (uvicorn restores its own originals after this)."""
        if not self._chained:
            return
        for sig, handler in self._chained.items():
            signal.signal(sig, handler)
        self._chained.clear()
        AppStatus.enable_automatic_graceful_drain_mode()

    def left(self, drain_s: float) -> float:
        """Seconds left of a drain of ``drain_s`` that began at the signal."""
        return 0.0 if self._since is None else max(0.0, drain_s - (monotonic() - self._since))

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if not self.draining:
            self._since = monotonic()
        self.draining = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.started.set)
        chained = self._chained.get(sig)
        if callable(chained):
            chained(sig, frame)
        elif chained == signal.SIG_DFL:
            signal.signal(sig, chained)
            signal.raise_signal(sig)


class Workers(Multiprocess):
    """uvicorn's supervisor of ``--workers N``, closing its copy of the listening socket first
    when it stops, so that new connections are refused at once, as with one process; and its
    copy of each worker's end of the health-check pipe, so that a worker dying while asked is
    seen at once (end of file) rather than after the check's whole timeout."""

    def keep_subprocess_alive(self) -> None:
        """uvicorn's check of every worker, once the workers started since hold their own pipe ends."""
        for process in self.processes:
            process.child_conn.close()
        super().keep_subprocess_alive()

    def terminate_all(self) -> None:
        """Close the listening socket, then send each worker SIGTERM (uvicorn's own)."""
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


@router.get("/readyz", summary="Readiness")
async def readyz(request: Request) -> JSONResponse:
    """200 while this replica takes new requests, 503 once it drains (SIGTERM): the balancer's check."""
    if request.app.state.drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ready"})
