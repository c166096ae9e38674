"""A long-lived agent process, for test_replicas: one checkpointer (pool) for its whole life.

    python -m tests.helpers.replica_child CHECKPOINT_URL THREAD

Reads one question per stdin line, runs it as a turn on THREAD with the offline model, and
prints ``turn <status> <answer or error>`` on one line when the turn is over.
"""

from __future__ import annotations

import asyncio
import sys

from langchain_core.messages import HumanMessage

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.models.offline import OfflineChatModel
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.thread_lock import ThreadBusyError
from agent_ng.settings import Settings


async def main(url: str, thread: str) -> None:
    settings = Settings(checkpoint_url=url)
    async with open_checkpointer(url) as saver:
        graph = build_graph(OfflineChatModel(), checkpointer=saver, settings=settings)
        config = {"configurable": {"thread_id": thread}}
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while question := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            text, end = [], None
            try:
                async for event in stream(graph, {"messages": [HumanMessage(question)]}, config):
                    if event.type == "content":
                        text.append(event.text)
                    elif event.type == "run_end":
                        end = event
            except ThreadBusyError:
                pass
            answer = end.error if end.status == "error" else "".join(text)
            print(f"turn {end.status} {answer}".replace("\n", " "), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
