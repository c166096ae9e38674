"""The documentation says what the code does: README.md and every file under docs/ are checked.

- **Python blocks run.** Every ```python block is executed, offline: no ``OPENAI_*``,
  ``AGENT_*`` or LangSmith variable is set (so the offline model answers), ``AGENT_DATA_DIR``
  and the working directory are the test's ``tmp_path``, so nothing is written outside it.
  Top-level ``await`` and ``async with`` are allowed (compiled with
  ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``). **A file's blocks run in order, in one namespace and on
  one event loop**: a block may use what an earlier block of the same file defined (the docs
  say so where one does); files never share anything. A block that does not await runs
  outside the loop, so it may call ``asyncio.run`` itself.
- **Python blocks use only the public API**: ``from agent_ng import <name in agent_ng.__all__>``,
  never a submodule, besides the standard library, LangChain/LangGraph and the libraries of
  the ``service`` extra.
- **Shell blocks are not run** (they start servers or reach the network), but every
  ``agent-ng`` subcommand and option they (or inline code) mention exists: ``--help`` through
  typer's ``CliRunner`` on ``agent_ng.cli.main.app``. JSON blocks parse.
- **Names resolve**: every ``AGENT_*``/``OPENAI_*`` variable mentioned is in the settings
  reference (or, ``AGENT_TEST_*``, read by the tests); every ``agent_ng.…`` module path, test
  path (``tests/…py::test_name``), repository path and relative link (with its ``#anchor``)
  exists.
- **docs/settings.md is generated**: it equals ``agent_ng.cli.settings.reference()``.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import importlib.util
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import agent_ng
from agent_ng.cli.settings import DOCUMENTED, REGENERATE, env_names, reference
from tests.helpers.paths import REPO, package_modules

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
ALLOWED_IMPORTS = {"langchain", "langchain_core", "langgraph", "langgraph_sdk", "fastapi", "sse_starlette", "httpx", "pydantic"}
"""Top-level packages a Python block may import besides the standard library and ``agent_ng``."""


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    """The line of the opening fence, 1-based."""
    lang: str
    code: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    found, lang, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if lang is None and (opening := re.fullmatch(r"```(\S*)\s*", line)):
            lang, start, lines = opening.group(1), number, []
        elif lang is not None and re.fullmatch(r"```\s*", line):
            found.append(Block(path, start, lang, "\n".join(lines) + "\n"))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"{path}: the block opened at line {start} is never closed"
    return found


def prose(path: Path) -> str:
    """A file's text outside its fenced blocks."""
    return re.sub(r"^```.*?^```\s*$", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)


def doc_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang == "python"]


# --- python blocks ------------------------------------------------------------------------


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Iterator[Path]:
    """No model key, URL or setting from the environment; data and working directory in tmp_path."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "AGENT_", "LANGSMITH_", "LANGCHAIN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    thresholds = gc.get_threshold()
    yield tmp_path
    gc.unfreeze()  # a block may call tune_collector(): the test process keeps its own collector
    gc.set_threshold(*thresholds)


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=doc_id)
def test_every_python_block_runs(path, offline):
    namespace: dict = {"__name__": "__docs__"}
    loop = asyncio.new_event_loop()
    try:
        for block in python_blocks(path):
            source = "\n" * block.line + block.code  # tracebacks give the file's own line numbers
            code = compile(source, doc_id(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            try:
                result = eval(code, namespace)  # the documentation's own code
                if asyncio.iscoroutine(result):
                    loop.run_until_complete(result)
            except Exception as e:
                raise AssertionError(f"the python block at {block} fails: {type(e).__name__}: {e}") from e
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def imported_modules(block: Block) -> Iterator[tuple[str, list[str]]]:
    """Each import of a block: the module and the names taken from it."""
    for node in ast.walk(ast.parse(block.code)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{block}: a relative import"
            yield node.module or "", [alias.name for alias in node.names]


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=doc_id)
def test_python_blocks_use_only_the_public_api(path):
    for block in python_blocks(path):
        for module, names in imported_modules(block):
            top = module.split(".")[0]
            if top == "agent_ng":
                assert module == "agent_ng", f"{block} imports the submodule {module}: use `from agent_ng import ...`"
                assert names and set(names) <= set(agent_ng.__all__), (
                    f"{block} imports {names} from agent_ng; the public names are {agent_ng.__all__}"
                )
            else:
                assert top in sys.stdlib_module_names or top in ALLOWED_IMPORTS, (
                    f"{block} imports {module}, neither the standard library nor one of {sorted(ALLOWED_IMPORTS)}"
                )


def test_json_blocks_parse():
    for path in DOCS:
        for block in blocks(path):
            if block.lang == "json":
                json.loads(block.code)


# --- the command line -------------------------------------------------------------------

OPERATORS = {"&&", "||", "|", ";", ">", "<", "&"}


def cli_mentions() -> list[tuple[str, list[str]]]:
    """Each ``agent-ng ...`` in a shell block or inline code: where, and its words."""
    found = []
    for path in DOCS:
        texts = [(str(b), b.code.replace("\\\n", " ")) for b in blocks(path) if b.lang in ("bash", "sh", "shell")]
        texts += [(doc_id(path), span) for span in re.findall(r"`([^`\n]+)`", prose(path))]
        for where, text in texts:
            for line in text.splitlines():
                for match in re.finditer(r"(?:^|[\s;&|(])agent-ng\s+(.*)", line):
                    try:
                        words = shlex.split(match.group(1), comments=True)
                    except ValueError:
                        words = match.group(1).split()
                    cut = next((i for i, w in enumerate(words) if w in OPERATORS), len(words))
                    found.append((where, [w.strip("[]") for w in words[:cut]]))
    return found


def command_path(words: list[str]) -> tuple[list[str], list[str]]:
    """The subcommand path (``threads fork``) and the ``--options`` among ``words``."""
    from agent_ng.cli.main import app

    group = typer.main.get_command(app)
    path = []
    for word in words:
        commands = getattr(group, "commands", None)
        if commands is None or word.startswith("-"):
            break
        path.append(word)
        group = commands.get(word)
        if group is None:
            break
    options = [w.split("=")[0] for w in words if w.startswith("--")]
    return path, options


def test_every_agent_ng_subcommand_and_option_mentioned_exists(monkeypatch):
    monkeypatch.setattr("agent_ng.cli.main.tune_collector", lambda: None)  # process-wide gc settings
    from agent_ng.cli.main import app

    mentions = cli_mentions()
    assert mentions, "the docs mention no agent-ng command"
    runner, helps = CliRunner(), {}
    for where, words in mentions:
        path, options = command_path(words)
        assert path or words[:1] == ["--help"], f"{where}: `agent-ng {' '.join(words)}` names no subcommand"
        key = tuple(path)
        if key not in helps:
            helps[key] = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        shown = helps[key]
        assert shown.exit_code == 0, f"{where}: `agent-ng {' '.join(path)}` does not exist:\n{shown.output}"
        for option in options:
            listed = re.search(rf"{re.escape(option)}(?![\w-])", shown.output)
            assert listed, f"{where}: `agent-ng {' '.join(path)}` has no option {option}"


# --- names that must resolve --------------------------------------------------------------


def documented_variables() -> set[str]:
    names = set()
    for cls in DOCUMENTED:
        for name, field in cls.model_fields.items():
            names.update(env_names(cls, name, field))
    return names


def test_every_variable_mentioned_is_in_the_settings_reference():
    known = documented_variables()
    test_sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    for path in DOCS:
        for name, wildcard in re.findall(r"\b((?:AGENT|OPENAI)_[A-Z0-9_]*)(\*?)", path.read_text()):
            if name.startswith("AGENT_TEST_"):
                assert name in test_sources, f"{doc_id(path)}: no test reads {name}"
            elif wildcard or name.endswith("_"):  # AGENT_HTTP_*, or the prefix itself
                assert any(k.startswith(name) for k in known), f"{doc_id(path)}: no setting matches {name}*"
            else:
                assert name in known, f"{doc_id(path)}: {name} is not a setting (see docs/settings.md)"


def top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def resolves(dotted: str) -> bool:
    """Whether ``agent_ng.x.y[.attr]`` or ``agent_ng.x.y:attr`` names a module or a top-level name
    of one, found without importing the module itself."""
    module, _, attr = dotted.partition(":")
    parts, spec, depth = module.split("."), None, 0
    for depth in range(1, len(parts) + 1):
        try:
            found = importlib.util.find_spec(".".join(parts[:depth]))
        except ModuleNotFoundError:
            found = None
        if found is None:
            depth -= 1
            break
        spec = found
    rest = [*parts[depth:], *([attr] if attr else [])]
    if not rest:
        return True
    return spec is not None and spec.origin is not None and rest[0] in top_level_names(Path(spec.origin))


def package_sources() -> str:
    return "\n".join(path.read_text() for path in package_modules().values())


def test_every_module_path_mentioned_exists():
    """A dotted ``agent_ng.…`` name is a module or a name in one, or a string the code uses
    (a span attribute such as ``agent_ng.tool.cached``)."""
    sources = package_sources()
    for path in DOCS:
        for dotted in set(re.findall(r"\bagent_ng(?:\.[A-Za-z_]\w*)+(?::\w+)?", path.read_text())):
            exists = resolves(dotted) or f'"{dotted}"' in sources
            assert exists, f"{doc_id(path)}: {dotted} does not exist"


def test_every_test_mentioned_exists():
    for path in DOCS:
        for file, name in re.findall(r"\b(tests/[\w/]+\.py)(?:::(\w+))?", path.read_text()):
            assert (REPO / file).is_file(), f"{doc_id(path)}: {file} does not exist"
            if name:
                assert re.search(rf"def {name}\b", (REPO / file).read_text()), f"{doc_id(path)}: no {file}::{name}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+\s+(.+)$", prose(path), flags=re.MULTILINE)}


def test_every_link_and_repository_path_mentioned_exists():
    for path in DOCS:
        text = prose(path)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{doc_id(path)}: the link {target} leads nowhere"
            if anchor:
                assert anchor in anchors(linked), f"{doc_id(path)}: {linked.name} has no heading #{anchor}"
        for span in re.findall(r"`([^`\s]+)`", text):
            candidate = span.rstrip("/")
            if re.fullmatch(r"\.?[\w-]+(/[\w.-]+)+", candidate) or re.fullmatch(r"[\w-]+\.(md|json|toml)", candidate):
                assert (REPO / candidate).exists(), f"{doc_id(path)}: `{span}` does not exist in the repository"


# --- the README's promises and the settings reference --------------------------------------


def test_the_readme_opens_with_exactly_two_commands_and_ci_runs_its_test_command():
    readme = blocks(REPO / "README.md")
    commands = [b for b in readme if b.line <= 50 and b.lang in ("bash", "sh", "shell", "")]
    assert len(commands) == 2 and readme[:2] == commands, "the first screen holds exactly two commands"
    install, tests = (b.code.strip() for b in commands)
    assert install.startswith("python3 -m venv .venv") and "agent-ng ask" in install
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == tests, ".ci/run must run the README's test command verbatim"


def test_the_settings_reference_is_generated_from_the_settings_classes():
    generated = reference()
    assert (REPO / "docs" / "settings.md").read_text() == generated, (
        f"docs/settings.md is not what the settings classes say: regenerate it from the repository root with "
        f"`.venv/bin/{REGENERATE}`"
    )
