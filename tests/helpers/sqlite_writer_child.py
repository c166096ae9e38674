"""One of several processes writing one SQLite file, for test_sqlite_processes.

    python -m tests.helpers.sqlite_writer_child CHECKPOINT_URL NAME RUNS

Opens the checkpointer (on a file the others may be creating at the same moment), prints
``ready``, waits for a line on stdin (so all processes start writing together), then runs RUNS
turns on thread NAME (a tool call and an answer each, pruned to 5 checkpoints after each run)
and prints ``done`` after each; any error ends the process with its traceback.
"""

from __future__ import annotations

import asyncio
import sys

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention
from agent_ng.settings import Settings
from tests.helpers.scripted_model import Reply, ScriptedModel, calls


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def main(url: str, name: str, runs: int) -> None:
    replies = [r for j in range(runs) for r in (calls(("add", {"a": j, "b": 1})), Reply(text=f"{name} a{j}"))]
    async with open_checkpointer(url, retention=Retention(keep_checkpoints=5)) as saver:
        graph = build_graph(
            ScriptedModel(replies=replies), tools=[add], checkpointer=saver,
            settings=Settings(checkpoint_url=url, system_prompt=""),
        )
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for j in range(runs):
            events = [e async for e in stream(graph, {"messages": [HumanMessage(f"{name} q{j}")]},
                                              {"configurable": {"thread_id": name}})]
            if events[-1].status != "done":
                raise RuntimeError(f"run {j} ended {events[-1].status}: {events[-1].to_dict()}")
            print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
