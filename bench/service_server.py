"""The service under load, in its own process: ``python -m agent_ng.bench.service_server TOKENS RATE``.

The app ``agent-ng serve`` runs (``agent_ng.service.app.create_app``, one uvicorn worker, in-memory
saver and tool store) over the bench's paced model instead of a real one, with the collector
tuned as the ``agent-ng`` command tunes it (``agent_ng.collector``). It binds a free
loopback port itself and prints it on one line, so the benchmark can read it without a race,
then serves until terminated. Its own process, so its CPU and memory are the server's alone.

``python -m agent_ng.bench.service_server floor K TOKENS RATE`` prints instead (one JSON object)
what the paced model alone costs per token at K streams, with no server around it: its own
generator (``_astream``) and LangChain's ``astream`` (its callbacks), each K streams at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import uvicorn
from langchain_core.messages import HumanMessage

from agent_ng.bench.models import TokenModel
from agent_ng.collector import tune_collector
from agent_ng.service.app import create_app
from agent_ng.service.settings import ServiceSettings


def main(tokens: int, rate: float) -> None:
    settings = ServiceSettings(checkpoint_url="memory://", cache_url="memory://", system_prompt="")
    model = TokenModel(tokens=tokens, interval_s=1 / rate)
    app = create_app(settings, model=model, tools=[])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", backlog=4096, timeout_graceful_shutdown=2)
    tune_collector()
    uvicorn.Server(config).run(sockets=[sock])


async def floor(k: int, tokens: int, rate: float) -> dict[str, float]:
    """CPU µs per token of K paced streams of the model alone, raw and through ``astream``."""
    model = TokenModel(tokens=tokens, interval_s=1 / rate)
    question = [HumanMessage("go")]

    async def raw() -> None:
        async for _ in model._astream(question):
            pass

    async def astream() -> None:
        async for _ in model.astream(question):
            pass

    costs = {}
    for name, one in (("raw", raw), ("astream", astream)):
        await one()
        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(k)))
        costs[f"{name}_us_per_token"] = (time.process_time() - started) / (k * tokens) * 1e6
    return costs


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        tune_collector()
        print(json.dumps(asyncio.run(floor(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))))
    else:
        main(int(sys.argv[1]), float(sys.argv[2]))
