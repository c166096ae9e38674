"""The layout's promises: one public API, imports that point one way, no bare subpackage imports.

The import graph is read from the source (every ``import``, also inside functions and under
``TYPE_CHECKING``, but for the public API's own lazy table), with the folder of each
subpackage taken from pyproject.toml's ``package-dir``, as setuptools installs it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import agent_ng
from tests.helpers.paths import REPO, package_modules

PUBLIC = ["build_graph", "open_agent", "stream", "AgentEvent", "Settings", "progress", "Progress",
          "ToolSpec", "configure", "tune_collector"]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that ``name`` imports."""
    tree = ast.parse(path.read_text())
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    if name == "agent_ng":
        return set()
    return {t for t in targets if t in known and t != name and not name.startswith(f"{t}.")}


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_the_public_api_is_complete_and_loaded_lazily():
    assert sorted(agent_ng.__all__) == sorted(PUBLIC)
    fresh = subprocess.run(
        [sys.executable, "-c", "import sys, agent_ng; print(sorted(m for m in sys.modules if m.startswith('agent_ng')))"],
        capture_output=True, text=True, check=True,
    )
    assert fresh.stdout.strip() == "['agent_ng']", "importing agent_ng must not load the agent"
    for name in PUBLIC:
        assert getattr(agent_ng, name) is not None, name
    assert agent_ng.progress.report.__module__ == "agent_ng.tools.progress"
    with pytest.raises(AttributeError, match="no attribute 'graph_builder'"):
        agent_ng.graph_builder  # noqa: B018


def test_no_module_imports_itself_back_through_another():
    found = package_modules()
    graph = {name: imports(name, path, set(found)) for name, path in found.items()}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle between modules: {' -> '.join(e.args[1])}")


def test_packages_import_one_way():
    found = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        graph.setdefault(package_of(name), set()).update(
            package_of(t) for t in imports(name, path, set(found)) if package_of(t) != package_of(name)
        )
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle between packages: {' -> '.join(e.args[1])}")
    assert order.index("agent_ng.tools") < order.index("agent_ng.engine") < order.index("agent_ng.graph")
    assert "agent_ng.settings" not in graph["agent_ng.tools"], "tools know nothing of settings"


def test_tools_know_nothing_of_settings():
    found = package_modules()
    for name, path in found.items():
        if name.startswith("agent_ng.tools"):
            assert "agent_ng.settings" not in imports(name, path, set(found)), name


@pytest.mark.parametrize("line", ["import graph.agent", "from tools import progress", "from nodes.llm import x",
                                  "import service", "from bench.suite import run"])
def test_the_linter_refuses_bare_subpackage_imports(line, tmp_path):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is in the dev extra"
    checked = subprocess.run(
        [ruff, "check", "--config", str(REPO / "pyproject.toml"), "--select", "TID251", "--stdin-filename",
         "agent_ng_example.py", "-"],
        input=f"{line}\n", capture_output=True, text=True,
    )
    assert checked.returncode == 1 and "TID251" in checked.stdout, checked.stdout
