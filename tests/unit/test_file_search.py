"""``file_search``: matches with progress per file, and a root it cannot leave."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent_ng.tools import progress
from agent_ng.tools.file_search import MAX_REPORTS, make_file_search


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A search root with text, hidden, binary and symlinked files, and a secret outside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / ".hidden").mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("needle: the secret outside\n")
    (root / "README.md").write_text("intro\nneedle in the readme\n")
    (root / "src" / "a.py").write_text("x = 1\n# needle one\n# Needle two\n")
    (root / "src" / "pkg" / "b.py").write_text("def needle():\n    return 'needle'\n")
    (root / ".hidden" / "c.txt").write_text("needle hidden\n")
    (root / "image.bin").write_bytes(b"\x89PNG\0\0needle")
    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "outdir").symlink_to(outside, target_is_directory=True)
    (root / "inner.txt").symlink_to(root / "README.md")
    return root, outside


@contextmanager
def recorded_progress() -> Iterator[list[dict]]:
    records: list[dict] = []
    with progress.tool_call_scope("call_1", "file_search", records.append):
        yield records


def test_finds_matches_under_the_root_with_progress_per_file(tree):
    root, _ = tree
    with recorded_progress() as records:
        result = make_file_search(root).invoke({"pattern": "needle"})

    lines = result.splitlines()
    assert lines[0] == "5 matching lines in 4 files (4 text files searched)"
    assert "README.md:2: needle in the readme" in lines
    assert "inner.txt:2: needle in the readme" in lines
    assert "src/a.py:2: # needle one" in lines
    assert "src/pkg/b.py:1: def needle():" in lines and "src/pkg/b.py:2:     return 'needle'" in lines
    assert "skipped 1 binary, 0 too-large and 0 unreadable files" in lines
    assert "skipped 1 symlinks leading outside the search root: leak.txt" in lines
    assert "secret" not in result and "hidden" not in result
    picked = ["README.md", "image.bin", "inner.txt", "leak.txt", "src/a.py", "src/pkg/b.py"]
    assert [r["message"] for r in records] == [
        f"{name} ({i} of {len(picked)} files)" for i, name in enumerate(picked, 1)
    ]
    assert [r["progress"] for r in records] == [i / len(picked) for i in range(1, len(picked) + 1)]


def test_glob_and_literal_and_regex(tree):
    root, _ = tree
    search = make_file_search(root)
    assert search.invoke({"pattern": "[Nn]eedle t", "glob": "src/*.py"}).splitlines()[2:] == [
        "src/a.py:3: # Needle two"
    ]
    literal = search.invoke({"pattern": "needle()", "glob": "**/*.py", "literal": True})
    assert literal.splitlines()[2:] == ["src/pkg/b.py:1: def needle():"]
    assert "1 matching lines" in search.invoke({"pattern": "intro", "glob": str(root / "README.md")})


def test_bounded_output_says_where_it_stopped(tree):
    root, _ = tree
    result = make_file_search(root).invoke({"pattern": "needle", "max_matches": 2})
    assert result.splitlines()[:2] == [
        "2 matching lines in 2 files (2 text files searched)",
        "stopped at max_matches=2; narrow the pattern or glob for more",
    ]
    assert len(make_file_search(root, max_files=2).invoke({"pattern": "x"}).splitlines()) >= 2
    assert "only 2 were searched" in make_file_search(root, max_files=2).invoke({"pattern": "x"})


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("../outside/*", "uses '..' to leave the search root"),
        ("src/../../outside/secret.txt", "uses '..' to leave the search root"),
        ("/etc/passwd", "'/etc/passwd' is outside the search root"),
        ("outdir/secret.txt", "'outdir/secret.txt' leads outside the search root"),
        ("leak.txt", "'leak.txt' leads outside the search root"),
        ("", "glob is empty"),
    ],
)
def test_paths_leaving_the_root_are_refused(tree, glob, message):
    root, _ = tree
    with pytest.raises(ValueError, match=message):
        make_file_search(root).invoke({"pattern": "needle", "glob": glob})


@pytest.mark.parametrize("glob", ["{..,src}/*", "{../outside,src}/*", "[.][.]/outside/*"])
def test_glob_syntax_cannot_smuggle_a_parent_directory(tree, glob):
    root, _ = tree
    result = make_file_search(root).invoke({"pattern": "secret", "glob": glob})
    assert result.splitlines() == [
        "0 matching lines in 0 files (0 text files searched)",
        "no file under the search root matches the glob",
    ]


def test_an_absolute_path_outside_is_refused_even_if_it_shares_a_prefix(tree):
    root, outside = tree
    with pytest.raises(ValueError, match="is outside the search root"):
        make_file_search(root).invoke({"pattern": "needle", "glob": str(outside / "secret.txt")})


def test_a_wildcard_into_a_symlinked_folder_outside_finds_nothing_and_says_so(tree):
    root, _ = tree
    result = make_file_search(root).invoke({"pattern": "secret", "glob": "outdir/*"})
    assert result.splitlines()[0] == "0 matching lines in 0 files (0 text files searched)"
    assert "skipped 1 symlinks leading outside the search root: outdir/secret.txt" in result
    assert "the secret outside" not in result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"pattern": ""}, "pattern is empty"),
        ({"pattern": "("}, r"invalid regular expression '\(': .*pass literal=true"),
        ({"pattern": "x" * 1001}, "pattern is too long"),
        ({"pattern": "x", "max_matches": 0}, "max_matches must be between 1 and 200"),
    ],
)
def test_bad_arguments_say_what_is_wrong(tree, args, message):
    root, _ = tree
    with pytest.raises(ValueError, match=message):
        make_file_search(root).invoke(args)


def test_a_missing_root_is_reported(tmp_path):
    with pytest.raises(ValueError, match="is not a directory; set AGENT_FILES_ROOT"):
        make_file_search(tmp_path / "nope").invoke({"pattern": "x"})


def test_many_files_report_progress_a_bounded_number_of_times(tmp_path):
    for i in range(3 * MAX_REPORTS):
        (tmp_path / f"f{i:04}.txt").write_text("hay\n")
    with recorded_progress() as records:
        make_file_search(tmp_path).invoke({"pattern": "needle"})
    assert len(records) <= MAX_REPORTS and records[-1]["progress"] == 1.0
