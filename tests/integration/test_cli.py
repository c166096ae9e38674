"""The ``agent-ng`` command as a person runs it, in fresh processes, offline."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.console import Console

from agent_ng.cli.view import PlainView, TurnView
from agent_ng.collector import THRESHOLDS
from agent_ng.graph.events import AgentEvent
from tests.helpers.paths import REPO

ROOT = REPO


def agent_ng(*args: str, data_dir: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_"))
    } | {"AGENT_DATA_DIR": str(data_dir), **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "agent_ng.cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_ask_offline_runs_both_tools_and_streams_the_answer(tmp_path):
    done = agent_ng("ask", "what is 17*23 and how many primes are below 200000?", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "offline model" in done.stderr
    out = done.stdout
    assert "[calculator] started" in out and "[count_primes] started" in out
    assert "[count_primes] 100% sieved 200,000 of 200,000" in out
    assert "17*23 = 391." in out and "There are 17,984 primes below 200,000." in out


@pytest.mark.parametrize("command", [["ask", "hi"], ["serve", "--port", "1"]])
def test_a_model_whose_provider_package_is_missing_is_one_line_and_exit_2(tmp_path, command):
    done = agent_ng(*command, data_dir=tmp_path, AGENT_MODEL="mistralai:mistral-large-latest")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "agent-ng: AGENT_MODEL=mistralai:mistral-large-latest needs the langchain-mistralai package: "
        "pip install langchain-mistralai"
    ]
    assert not (tmp_path / "checkpoints.db").exists(), "nothing is opened before the model is known"


def test_a_thread_continues_in_a_new_process_from_the_sqlite_file(tmp_path):
    first = agent_ng("ask", "what is 2+3?", "--thread", "t-cross", data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "checkpoints.db").exists()
    second = agent_ng("ask", "what did I ask before?", "--thread", "t-cross", data_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    assert 'Earlier you asked: "what is 2+3?"' in second.stdout
    other = agent_ng("ask", "what did I ask before?", "--thread", "t-other", data_dir=tmp_path)
    assert "what is 2+3?" not in other.stdout


def events(*specs: dict) -> list[AgentEvent]:
    return [AgentEvent(run_id="r", thread_id="t", t=0.0, **spec) for spec in specs]


RUN = events(
    {"type": "tool_call", "tool_call_id": "a", "name": "count_primes", "args": {"below": 100}},
    {"type": "tool_call", "tool_call_id": "b", "name": "explode", "args": {}},
    {"type": "tool_start", "tool_call_id": "a", "name": "count_primes", "args": {"below": 100}},
    {"type": "tool_start", "tool_call_id": "b", "name": "explode", "args": {}},
    {"type": "tool_progress", "tool_call_id": "a", "name": "count_primes", "progress": 0.5,
     "message": "halfway", "elapsed_s": 0.1, "eta_s": 0.1},
    {"type": "tool_error", "tool_call_id": "b", "name": "explode", "error": "boom", "elapsed_s": 0.2},
    {"type": "tool_complete", "tool_call_id": "a", "name": "count_primes", "elapsed_s": 0.3, "cached": False},
    {"type": "content", "text": "There are ", "node": "llm"},
    {"type": "content", "text": "25 primes.", "node": "llm"},
    {"type": "run_end", "status": "done", "usage": {}},
)


def test_live_view_shows_each_tool_its_outcome_and_the_answer():
    view = TurnView()
    for event in RUN[:5]:
        view.handle(event)
    assert view.rows["a"].fraction == 0.5 and view.rows["a"].state == "running"
    for event in RUN[5:]:
        view.handle(event)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(view)
    screen = console.file.getvalue()
    assert "count_primes(below=100)" in screen and "✓" in screen
    assert "explode()" in screen and "✗" in screen and "boom" in screen
    assert "There are 25 primes." in screen
    assert view.status == "done"


def test_plain_view_prints_text_as_it_streams_and_a_line_per_tool_event():
    out = io.StringIO()
    view = PlainView(out)
    for event in RUN:
        view.handle(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[count_primes] started {'below': 100}"
    assert "[count_primes] 50% halfway" in lines
    assert "[explode] failed after 0.20s: boom" in lines
    assert "There are 25 primes." in lines


def test_langgraph_json_names_a_graph_factory_that_imports_and_yields_the_compiled_graph():
    spec = json.loads((ROOT / "langgraph.json").read_text())
    path, _, attr = spec["graphs"]["agent"].partition(":")
    module = path.removeprefix("./").removesuffix(".py").replace("/", ".")
    probe = (
        f"import asyncio, importlib; factory = getattr(importlib.import_module({module!r}), {attr!r})\n"
        "async def main():\n"
        "    async with factory({'configurable': {}}) as g:\n"
        "        print(type(g).__name__, sorted(g.get_graph().nodes), g.checkpointer)\n"
        "asyncio.run(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "CompiledStateGraph"
    assert "'llm'" in done.stdout and "'tools'" in done.stdout
    assert done.stdout.strip().endswith("None")


def test_ctrl_c_keeps_the_finished_tool_and_the_next_question_works(tmp_path):
    """SIGINT once the calculator finished and count_primes reports progress: the run ends
    ``cancelled`` (exit 130), the thread keeps the calculator's result and marks the other call
    cancelled, and the next ``ask`` on the thread runs normally."""
    from langchain_core.messages import ToolMessage

    from agent_ng.graph.settle import CANCELLED

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_"))
    } | {"AGENT_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    question = "what is 17*23 and how many primes are below 2000000000?"
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_ng.cli.main", "ask", question, "--thread", "t-stop"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell that started the tests in the background left SIGINT ignored, and Python keeps
        # an ignored SIGINT ignored; give the child the default a person's terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    guard = threading.Timer(60, process.kill)  # a hang fails the test instead of blocking it
    guard.start()
    try:
        seen: list[str] = []
        while not (any("[calculator] done" in s for s in seen) and any("[count_primes] 5%" in s for s in seen)):
            line = process.stdout.readline()
            assert line, process.stderr.read()
            seen.append(line)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        guard.cancel()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, f"the run was not stopped by SIGINT:\n{out}\n{err}"
    assert "(run ended: cancelled)" in out

    messages = asyncio.run(stored_messages(f"sqlite:///{tmp_path / 'checkpoints.db'}", "t-stop"))
    results = {m.name: m for m in messages if isinstance(m, ToolMessage)}
    assert "391" in results["calculator"].text and results["calculator"].status == "success", err
    assert results["count_primes"].text == CANCELLED

    after = agent_ng("ask", "what did I ask before?", "--thread", "t-stop", data_dir=tmp_path)
    assert after.returncode == 0, after.stderr
    assert question in after.stdout


async def stored_messages(url: str, thread: str) -> list:
    from agent_ng.graph.agent import build_graph
    from agent_ng.persistence.checkpoint import open_checkpointer
    from tests.helpers.scripted_model import ScriptedModel

    async with open_checkpointer(url) as saver:
        graph = build_graph(ScriptedModel(replies=[]), tools=[], checkpointer=saver)
        state = await graph.aget_state({"configurable": {"thread_id": thread}})
    assert not state.next, "the thread is idle"
    return state.values["messages"]


def test_the_command_tunes_the_collector_before_any_subcommand_runs():
    """``agent_ng.collector``: start-up objects frozen, its thresholds set. In a child interpreter,
    so this test process keeps Python's own settings."""
    probe = (
        "import gc\n"
        "from typer.testing import CliRunner\n"
        "from agent_ng.cli.main import app\n"
        "before = gc.get_threshold(), gc.get_freeze_count()\n"
        "result = CliRunner().invoke(app, ['tools'])\n"
        "print(result.exit_code, before[0], gc.get_threshold(), before[1] == 0, gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.stdout.split(maxsplit=1) == ["0", f"(700, 10, 10) {THRESHOLDS} True True\n"], out.stderr
