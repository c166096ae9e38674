"""A run killed with SIGKILL while tools run resumes in another process; finished tools stay done.

The child (tests/crash_child.py) runs four parallel tools that log their tool call id when they
start; three finish, one blocks. The test reads the child's stdout until the checkpointer has
stored the three results and the fourth has started, then kills it (no sleeps: the child says
when). A second process resumes with ``stream(graph, None, config)`` on the same thread.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

from langchain_core.messages import AIMessage, ToolMessage

from agent_ng.graph.agent import build_graph
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.threads import show_thread
from agent_ng.settings import Settings
from tests.helpers.paths import REPO
from tests.helpers.scripted_model import ScriptedModel

GUARD_S = 40


async def child(url: str, thread: str, log: Path, mode: str, stderr: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.crash_child", url, thread, str(log), mode,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=stderr.open("w"),
    )


async def test_a_killed_run_resumes_running_only_the_unfinished_tool(checkpoint_url, tmp_path):
    thread = f"crash-{uuid.uuid4().hex}"
    log = tmp_path / "executions.log"
    stderr = tmp_path / "stderr.log"

    async with asyncio.timeout(GUARD_S):
        first = await child(checkpoint_url, thread, log, "run", stderr)
        stored: set[str] = set()
        blocked = None
        while len(stored) < 3 or blocked is None:
            line = (await first.stdout.readline()).decode()
            assert line, f"the child ended before the kill point: {stderr.read_text()}"
            kind, _, call_id = line.strip().partition(" ")
            if kind == "stored":
                stored.add(call_id)
            elif kind == "blocked":
                blocked = call_id
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL

        before = Counter(log.read_text().split())
        assert set(before) == stored | {blocked} and set(before.values()) == {1}
        assert blocked not in stored

        second = await child(checkpoint_url, thread, log, "resume", stderr)
        output, _ = await second.communicate()
        assert second.returncode == 0, stderr.read_text()
    assert "run_end done" in output.decode()

    after = Counter(log.read_text().split())
    assert {call_id: after[call_id] for call_id in stored} == dict.fromkeys(stored, 1), "finished tools ran once"
    assert after[blocked] == 2, "only the unfinished tool ran again"

    async with open_checkpointer(checkpoint_url) as saver:
        graph = build_graph(ScriptedModel(replies=[]), tools=[], checkpointer=saver, settings=Settings(system_prompt=""))
        history = await show_thread(graph, thread)
        await saver.adelete_thread(thread)
    results = [m for m in history.messages if isinstance(m, ToolMessage)]
    assert sorted(m.tool_call_id for m in results) == sorted(stored | {blocked}), "one result per call"
    assert sorted(m.text for m in results) == [f"part {i} done" for i in range(4)]
    assert isinstance(history.messages[-1], AIMessage) and history.messages[-1].text == "all four parts are done"
    assert history.status == "idle"
