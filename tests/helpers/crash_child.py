"""A run meant to be killed, for test_crash_resume: four parallel tools, one of which blocks.

    python -m tests.helpers.crash_child CHECKPOINT_URL THREAD LOG run      # killed by the test
    python -m tests.helpers.crash_child CHECKPOINT_URL THREAD LOG resume   # stream(graph, None, config)

Every tool appends its tool call id to LOG when it starts, so the test counts executions per
call. So that the test kills the process at a known point without sleeping, it prints
``stored <tool_call_id>`` once the checkpointer has stored a tool's result and ``blocked <id>``
when the blocking tool has started (in ``run`` mode it then waits forever).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.settings import Settings
from agent_ng.tools import progress
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

BLOCKING = 3


def report_stored_results(saver) -> None:
    """Print each tool result once the saver has stored it (the test's signal to kill)."""
    store = saver.aput_writes

    async def aput_writes(config, writes, task_id, task_path=""):
        await store(config, writes, task_id, task_path)
        for channel, value in writes:
            for message in value if isinstance(value, list) else [value]:
                if channel == "messages" and isinstance(message, ToolMessage):
                    print(f"stored {message.tool_call_id}", flush=True)

    saver.aput_writes = aput_writes


async def main(url: str, thread: str, log: Path, mode: str) -> None:
    @tool
    async def work(i: int) -> str:
        """Does part i of the job."""
        call_id = progress.current().tool_call_id
        with log.open("a") as f:
            f.write(call_id + "\n")
        if i == BLOCKING and mode == "run":
            print(f"blocked {call_id}", flush=True)
            await asyncio.Event().wait()
        return f"part {i} done"

    replies = [Reply(text="all four parts are done")]
    if mode == "run":
        replies.insert(0, calls(*[("work", {"i": i}) for i in range(4)]))
    settings = Settings(checkpoint_url=url, system_prompt="", max_concurrency=4)
    async with open_checkpointer(url) as saver:
        report_stored_results(saver)
        graph = build_graph(ScriptedModel(replies=replies), tools=[work], checkpointer=saver, settings=settings)
        config = {"configurable": {"thread_id": thread}}
        input = {"messages": [HumanMessage("do the four parts")]} if mode == "run" else None
        async for event in stream(graph, input, config):
            if event.type == "run_end":
                print(f"run_end {event.status}", flush=True)


if __name__ == "__main__":
    url, thread, log, mode = sys.argv[1:]
    asyncio.run(main(url, thread, Path(log), mode))
