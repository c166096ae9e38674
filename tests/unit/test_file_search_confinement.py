"""``file_search``'s one rule for paths and globs: nothing hidden and nothing outside the root is
read or named, whatever the glob's spelling; and patterns run in linear time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent_ng.tools.confinement import glob_refusal, refusal
from agent_ng.tools.file_search import make_file_search

SECRET = "s3cret-value"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with hidden files, links into them and out of the root, and a secret beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "src").mkdir(parents=True)
    (root / ".git").mkdir()
    outside.mkdir()
    (root / "src" / "a.py").write_text("visible = 1\n")
    (root / ".env").write_text(f"KEY={SECRET}\n")
    (root / ".git" / "config").write_text(f"token={SECRET}\n")
    (root / "src" / ".local.py").write_text(f"KEY={SECRET}\n")
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    (root / "notes.txt").symlink_to(root / ".env")
    (root / "cfg").symlink_to(root / ".git", target_is_directory=True)
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    return root


def search(root: Path, glob: str) -> str:
    """The result, or the refusal's message: what the model would read either way."""
    try:
        return make_file_search(root).invoke({"pattern": "=|secret|KEY", "glob": glob})
    except ValueError as exc:
        return str(exc)


HIDDEN = [
    ".env", ".git/config", "./.env", "**/.env", ".*", "**/.*", "src/.*", r"\.env", r".\env",
    r"\.git/*", ".git/**", "**/.git/*", "[.]env", "**/[.]*", "*env", "src/.local.py", "cfg/config",
]
OUTSIDE = [
    "../outside/*", r"\.\./outside/*", r".\./outside/*", r"\../outside/*", r"\.\.\/outside/*",
    r"src/\.\./\.\./outside/*", "**/../../outside/*", "*/../../outside/*", "./../outside/*",
    ".//../outside/*", r"src/..\/..\/outside/*", "[.][.]/outside/*", "[.].[/]outside/*",
    "{..,src}/*", "../outside/secret.txt", r"\.\./outside/secret.txt", "leak.txt",
]


@pytest.mark.parametrize("glob", HIDDEN + OUTSIDE)
def test_no_spelling_reads_a_hidden_file_or_one_outside(root, glob):
    said = search(root, glob)
    assert SECRET not in said
    assert "outside/secret.txt" not in said.replace(repr(glob), "").replace(glob, "")


@pytest.mark.parametrize("glob", [".env", ".git/config", r"\.env", r".\env", ".*", "**/.*", r"\.git/*", "cfg/config"])
def test_a_glob_naming_hidden_files_is_refused_with_a_reason(root, glob):
    assert "names hidden files or folders, which are never searched" in search(root, glob)


@pytest.mark.parametrize(
    "glob", [r"\.\./outside/*", r".\./outside/*", r"src/\.\./\.\./outside/*", r"\.\.\/outside/*", "**/../x"]
)
def test_a_glob_spelling_a_parent_is_refused_before_it_is_walked(root, glob):
    assert "uses '..' to leave the search root" in search(root, glob)


def test_an_absolute_glob_is_judged_by_the_same_rule(root):
    assert "names hidden files" in search(root, str(root / ".env"))
    assert "uses '..'" in search(root, str(root / ".." / "outside" / "secret.txt"))
    assert search(root, str(root / "src" / "a.py")).startswith("1 matching lines in 1 files")


def test_links_into_hidden_places_are_skipped_and_counted(root):
    said = search(root, "*")
    assert SECRET not in said
    assert "skipped 1 symlinks to hidden files or folders" in said
    assert "skipped 1 symlinks leading outside the search root: leak.txt" in said
    said = search(root, "cfg/*")
    assert SECRET not in said and "skipped 1 symlinks to hidden files or folders" in said


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("src/a.py", None),
        ("./src/a.py", None),
        (".env", "hidden"),
        ("src/.local.py", "hidden"),
        ("notes.txt", "hidden"),
        ("cfg/config", "hidden"),
        ("leak.txt", "outside"),
        ("../outside/secret.txt", "outside"),
        ("src/../.env", "outside"),
    ],
)
def test_the_path_rule(root, name, expected):
    assert refusal(root, name) == expected


@pytest.mark.parametrize(
    ("glob", "expected"),
    [("**/*.py", None), ("[.][.]/x", None), (r"\.\./x", "outside"), (r"a/.\./x", "outside"), ("**/.*", "hidden"), (".", None)],
)
def test_the_glob_rule(glob, expected):
    assert glob_refusal(glob) == expected


def test_a_catastrophic_pattern_runs_in_linear_time(tmp_path):
    """A backtracking engine takes seconds on 25 characters (doubling with each one more)."""
    (tmp_path / "line.txt").write_text("a" * 25 + "!\n")
    started = time.perf_counter()
    result = make_file_search(tmp_path).invoke({"pattern": "^(a+)+$"})
    assert result.startswith("0 matching lines in 0 files (1 text files searched)")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?<!x)y", "a++", r"(?P<x>a)(?P=x)"])
def test_patterns_that_need_backtracking_are_refused_with_a_reason(tmp_path, pattern):
    with pytest.raises(ValueError, match="is not supported by the linear-time regex engine .*literal=true"):
        make_file_search(tmp_path).invoke({"pattern": pattern})


def test_python_syntax_that_re2_shares_still_works(tmp_path):
    (tmp_path / "a.txt").write_text("Alpha 12\nbeta\n")
    result = make_file_search(tmp_path).invoke({"pattern": r"(?i)^alpha\s+(?P<n>\d+)$"})
    assert result.splitlines()[2:] == ["a.txt:1: Alpha 12"]
