"""The installed package as a user gets it: one top-level package, usable beside the user's code.

The wheel is built from a copy of the tracked files with setuptools' own build backend (what
``pip wheel`` runs), so the repository gets no build/ or egg-info; the agent runs in a child
process whose working directory holds a ``tools.py`` and a ``graph.py`` of the user's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

USERS_OWN = 'raise ImportError("the user\'s own {name} was imported instead of agent_ng\'s")\n'


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    build = "from setuptools import build_meta; print(build_meta.build_wheel({out!r}))"
    done = subprocess.run(
        [sys.executable, "-c", build.format(out=str(out))], cwd=source, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def test_the_wheel_installs_only_the_agent_ng_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"agent_ng", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, top
    for module in ("graph/agent.py", "engine/chain.py", "persistence/checkpoint.py", "models/offline.py",
                   "tools/progress.py", "service/static/index.html", "cli/main.py", "py.typed"):
        assert f"agent_ng/{module}" in names, module
    assert not [n for n in names if n.startswith("agent_ng/tests") or "/tests/" in n]


def test_installed_from_the_wheel_it_imports_in_the_repository_too(wheel, tmp_path):
    """No folder at the repository's top is named ``agent_ng``: from its root (the first entry of
    ``sys.path``), a non-editable install is not shadowed by a part of the source tree."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    program = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        f"sys.path.insert(1, {str(site)!r})\n"
        "import agent_ng.graph.agent, agent_ng\n"
        "print(agent_ng.__file__, agent_ng.graph.agent.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(site / "agent_ng" / "__init__.py"), str(site / "agent_ng" / "graph" / "agent.py")]


def test_the_agent_answers_from_a_directory_with_its_own_tools_and_graph_modules(tmp_path):
    for name in ("tools.py", "graph.py", "nodes.py", "service.py"):
        (tmp_path / name).write_text(USERS_OWN.format(name=name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["AGENT_DATA_DIR"] = str(tmp_path / "data")
    program = (
        "import asyncio\n"
        "from agent_ng import Settings, open_agent, stream\n"
        "async def main():\n"
        "    async with open_agent(Settings()) as agent:\n"
        "        config = {'configurable': {'thread_id': 't'}}\n"
        "        async for e in stream(agent.graph, {'messages': [('user', 'what is 17*23?')]}, config):\n"
        "            if e.type in ('tool_complete', 'run_end'):\n"
        "                print(e.type, e.name or e.status)\n"
        "        print((await agent.graph.aget_state(config)).values['messages'][-1].text)\n"
        "asyncio.run(main())\n"
    )
    embedded = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    assert embedded.stdout.splitlines() == ["tool_complete calculator", "run_end done", "17*23 = 391."]

    command = shutil.which("agent-ng", path=str(Path(sys.executable).parent))
    asked = subprocess.run(
        [command, "ask", "what is 17*23?"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert asked.returncode == 0, asked.stderr[-3000:]
    assert "391" in asked.stdout
