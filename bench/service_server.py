"""The service under load, in its own process: ``python -m bench.service_server TOKENS RATE [PROFILE]``.

The app ``agent-ng serve`` runs (``service.app.create_app``, one uvicorn worker, in-memory
saver and tool store) over the bench's paced model instead of a real one, with the start-up
objects frozen out of the collector's way as the ``agent-ng`` command does. It binds a free
loopback port itself and prints it on one line, so the benchmark can read it without a race,
then serves until terminated. Its own process, so its CPU and memory are the server's alone.
With ``PROFILE``, pyinstrument samples the server for its whole life and writes its report
there (text) when the server stops.
"""

from __future__ import annotations

import gc
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from bench.models import TokenModel
from service.app import create_app
from service.settings import ServiceSettings


def main(tokens: int, rate: float, profile: Path | None = None) -> None:
    settings = ServiceSettings(checkpoint_url="memory://", cache_url="memory://", system_prompt="")
    model = TokenModel(tokens=tokens, interval_s=1 / rate)
    app = create_app(settings, model=model, tools=[])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", backlog=4096, timeout_graceful_shutdown=2)
    gc.freeze()
    if profile is None:
        uvicorn.Server(config).run(sockets=[sock])
        return
    from pyinstrument import Profiler

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # uvicorn re-raises it when it stops
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        profiler.stop()
        profile.write_text(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
