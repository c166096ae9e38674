"""A run killed again and again, for test_run_once: four parallel tools that append to a file.

    python -m tests.helpers.kill_child CHECKPOINT_URL TOOL_STORE_URL THREAD LOG SEED run|resume

Each tool appends ``start <tool_call_id>`` to LOG (its side effect), waits a moment drawn from
SEED (test code may sleep, so that kills land at varied points), and returns. Once the tool
store has committed a result, ``recorded <tool_call_id>`` is appended to LOG too. Each line is
also printed, so the test can kill the process after a drawn number of them without sleeping.
``resume`` continues the thread from its checkpoint, or just reports an already finished run.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from agent_ng.engine.stores import open_tool_store
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.settings import Settings
from agent_ng.tools import progress
from tests.helpers.scripted_model import Reply, ScriptedModel, calls


def note(log: Path, line: str) -> None:
    with log.open("a") as f:
        f.write(line + "\n")
    print(line, flush=True)


def report_records(store, log: Path) -> None:
    """Note each committed record, and each call answered from one (a record committed just
    before a kill has no ``recorded`` line)."""
    record, lookup = store.record_result, store.recorded_result

    async def record_result(key, message, now):
        await record(key, message, now)
        note(log, f"recorded {json.loads(key)[-1]}")

    async def recorded_result(key, now):
        found = await lookup(key, now)
        if found is not None:
            note(log, f"replayed {json.loads(key)[-1]}")
        return found

    store.record_result, store.recorded_result = record_result, recorded_result


async def main(url: str, store_url: str, thread: str, log: Path, seed: int, mode: str) -> None:
    pause = random.Random(seed)

    @tool
    async def work(i: int) -> str:
        """Does part i of the job."""
        note(log, f"start {progress.current().tool_call_id}")
        await asyncio.sleep(pause.uniform(0, 0.03))
        return f"part {i} done"

    replies = [Reply(text="all four parts are done")]
    if mode == "run":
        replies.insert(0, calls(*[("work", {"i": i}) for i in range(4)]))
    settings = Settings(checkpoint_url=url, cache_url=store_url, system_prompt="", max_concurrency=4)
    async with open_checkpointer(url) as saver, open_tool_store(store_url) as store:
        report_records(store, log)
        graph = build_graph(
            ScriptedModel(replies=replies), tools=[work], checkpointer=saver, settings=settings, tool_store=store
        )
        config = {"configurable": {"thread_id": thread}}
        if mode == "resume" and not (await graph.aget_state(config)).next:
            print("run_end done", flush=True)
            return
        input = {"messages": [HumanMessage("do the four parts")]} if mode == "run" else None
        async for event in stream(graph, input, config):
            if event.type == "run_end":
                print(f"run_end {event.status}", flush=True)


if __name__ == "__main__":
    url, store_url, thread, log, seed, mode = sys.argv[1:]
    asyncio.run(main(url, store_url, thread, Path(log), int(seed), mode))
