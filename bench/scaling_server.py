"""A server of the scaling bench: ``python -m agent_ng.bench.scaling_server WORKERS TOKENS RATE``.

``agent-ng serve``'s app (``agent_ng.service.app.create_app``) over the bench's paced model, its
settings from the ``AGENT_*`` environment as ``agent-ng serve`` reads them, with ``WORKERS``
uvicorn workers on one port: one is one process; more run as ``agent-ng serve --workers N``
runs them (uvicorn's parent binds the port and supervises the workers through
``agent_ng.service.drain.Workers``; each worker builds the app itself, ``app`` below, so the
configurations ``agent_ng.service.topology`` refuses for several workers are refused here too,
given ``AGENT_WORKERS``). It binds a free loopback port itself and prints it on one line, so the
benchmark reads it without a race, then serves until terminated. uvicorn logs at INFO without its
access log: each worker's ``Application startup complete.`` on stderr is how the benchmark knows
every worker is serving, where one answer on the shared port shows only that one is.

Every process tunes its collector as the ``agent-ng`` command tunes its own
(``agent_ng.collector``): uvicorn starts the workers as new interpreters, which do not inherit
the parent's setting.
"""

from __future__ import annotations

import os
import socket
import sys

import uvicorn
from fastapi import FastAPI

from agent_ng.bench.models import TokenModel
from agent_ng.collector import tune_collector
from agent_ng.service.app import create_app
from agent_ng.service.drain import WORKER_START_S, Workers
from agent_ng.service.settings import ServiceSettings

FACTORY = "agent_ng.bench.scaling_server:app"


def app() -> FastAPI:
    """The app of one worker; the model's pace from ``BENCH_TOKENS`` and ``BENCH_RATE``."""
    model = TokenModel(tokens=int(os.environ["BENCH_TOKENS"]), interval_s=1 / float(os.environ["BENCH_RATE"]))
    served = create_app(ServiceSettings(system_prompt=""), model=model, tools=[])
    tune_collector()
    return served


def main(workers: int, tokens: int, rate: float) -> None:
    os.environ |= {"BENCH_TOKENS": str(tokens), "BENCH_RATE": str(rate), "AGENT_WORKERS": str(workers)}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    options = {"log_level": "info", "access_log": False, "backlog": 4096, "timeout_graceful_shutdown": 2}
    if workers == 1:
        uvicorn.Server(uvicorn.Config(app(), **options)).run(sockets=[sock])
        return
    config = uvicorn.Config(
        FACTORY, factory=True, workers=workers, timeout_worker_healthcheck=WORKER_START_S, **options
    )
    Workers(config, sockets=[sock]).run()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
