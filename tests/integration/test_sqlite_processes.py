"""Four processes x 20 runs on one SQLite file: no "database is locked", nothing lost.

The processes open the file together (creating it), then write at once: each run's checkpoints
and tool results, and each process prunes its thread after every run (retention), so writes,
prunes and reads of four processes interleave. WAL lets readers run beside the one writer and
the busy timeout makes writers take turns (agent_ng.persistence.checkpoint).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention
from tests.helpers.paths import REPO

PROCESSES, RUNS = 4, 20
ROOT = REPO


def test_four_processes_share_one_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    names = [f"writer-{i}" for i in range(PROCESSES)]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.sqlite_writer_child", url, name, str(RUNS)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in names
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outcomes = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (out, err) in zip(children, outcomes, strict=True):
        assert "locked" not in err and child.returncode == 0, err
        assert out.split().count("done") == RUNS

    async def threads() -> dict[str, list]:
        async with open_checkpointer(url, retention=Retention(keep_checkpoints=0)) as saver:
            return {name: (await saver.aget_tuple({"configurable": {"thread_id": name}})).checkpoint[
                "channel_values"]["messages"] for name in names}

    for name, messages in asyncio.run(threads()).items():
        assert [m.text for m in messages if isinstance(m, HumanMessage)] == [f"{name} q{j}" for j in range(RUNS)]
        assert [m.text for m in messages if isinstance(m, AIMessage) and m.text] == [f"{name} a{j}" for j in range(RUNS)]
        assert len([m for m in messages if isinstance(m, ToolMessage)]) == RUNS
