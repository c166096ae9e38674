"""Search files for the agent, grep-like, under a root it cannot leave.

The pattern and the glob come from a model, so the search is held under one root
(``AGENT_FILES_ROOT``, default the current directory) by one rule (``agent_ng.tools.confinement``):
a glob whose segments leave the root or name hidden files, however spelt, is refused before
it is walked, an absolute path outside the root too, and every file it picks is skipped when
it is hidden or resolves (symlinks followed) outside the root or to a hidden file; a glob
that names one such file is refused outright. ``**`` does not descend into symlinked folders,
binary files (a NUL byte near the start) and files over the size limit are skipped, and the
output is bounded. Progress is reported per file (at most ``MAX_REPORTS`` times a search).

The pattern runs on RE2 (google-re2), whose time is linear in the text, so no pattern can
backtrack for minutes; RE2 also lets go of the GIL while it matches, so the search, in a
worker thread, never holds the event loop. Python syntax that needs backtracking
(backreferences, lookaround) is refused with a message saying so.

    search = make_file_search(Path("."))
    search.invoke({"pattern": "TODO", "glob": "**/*.py"})
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePath

import re2
from langchain_core.tools import BaseTool, tool
from wcmatch import glob as wcglob

from agent_ng.tools import progress
from agent_ng.tools.confinement import glob_refusal, refusal

GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.NODIR
"""No BRACE: ``{..,src}`` would expand to ``..`` after the check for it."""
MAX_PATTERN = 1_000
MAX_LINE = 300
MAX_REPORTS = 200
BINARY_SNIFF = 8_192
RE2_OPTIONS = re2.Options()
RE2_OPTIONS.log_errors = False


@dataclass(slots=True)
class Findings:
    """What a search found, and what it skipped and why, for ``summary``."""

    matches: list[str] = field(default_factory=list)
    files_with_matches: int = 0
    searched: int = 0
    binary: int = 0
    large: int = 0
    unreadable: int = 0
    hidden: int = 0
    outside: list[str] = field(default_factory=list)


def relative_glob(glob: str, root: Path) -> str:
    """``glob`` as a pattern relative to ``root``; ValueError if it would leave the root or
    names hidden files (``agent_ng.tools.confinement``), whatever its spelling."""
    glob = glob.strip()
    if not glob:
        raise ValueError("glob is empty; use '**/*' for every file")
    if PurePath(glob).is_absolute():
        try:
            glob = str(PurePath(glob).relative_to(root))
        except ValueError:
            raise ValueError(
                f"refused: {glob!r} is outside the search root {root}; give a path relative to it"
            ) from None
    reason = glob_refusal(glob)
    if reason == "outside":
        raise ValueError(f"refused: {glob!r} uses '..' to leave the search root {root}")
    if reason is None and not wcglob.is_magic(glob, flags=GLOB_FLAGS):
        reason = refusal(root, glob)  # a plain path: judged as the file it names, links followed
        if reason == "outside":
            raise ValueError(f"refused: {glob!r} leads outside the search root {root} (a symlink)")
    if reason == "hidden":
        raise ValueError(f"refused: {glob!r} names hidden files or folders, which are never searched")
    return glob


def compiled(pattern: str, literal: bool) -> re2._Regexp:
    """The pattern as an RE2 regex; a ValueError the model can act on when it is not one."""
    if not pattern:
        raise ValueError("pattern is empty")
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern is too long: {len(pattern):,} characters, limit {MAX_PATTERN:,}")
    try:
        return re2.compile(re2.escape(pattern) if literal else pattern, RE2_OPTIONS)
    except re2.error as exc:
        engine_error = exc.args[0].decode() if isinstance(exc.args[0], bytes) else str(exc)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"invalid regular expression {pattern!r}: {exc}; pass literal=true to search for the text as is"
        ) from None
    raise ValueError(
        f"regular expression {pattern!r} is not supported by the linear-time regex engine"
        f" (RE2: no backreferences, lookaround or possessive repeats; {engine_error});"
        " rewrite it, or pass literal=true to search for the text as is"
    )


def search(
    root: Path,
    regex: re2._Regexp,
    glob: str,
    *,
    max_matches: int,
    max_files: int,
    max_file_bytes: int,
) -> tuple[Findings, int]:
    """Search the files ``glob`` picks under ``root``; the findings and how many files it picked
    (``max_files + 1`` standing for "more")."""
    picked = sorted(islice(wcglob.iglob(glob, root_dir=root, flags=GLOB_FLAGS), max_files + 1))
    files, total = picked[:max_files], len(picked)
    found = Findings()
    every = max(1, math.ceil(len(files) / MAX_REPORTS))
    for index, name in enumerate(files, 1):
        scan_file(root, name, regex, found, max_matches, max_file_bytes)
        if index % every == 0 or index == len(files) or len(found.matches) >= max_matches:
            progress.report(index / len(files), f"{name} ({index} of {len(files)} files)")
        if len(found.matches) >= max_matches:
            break
    return found, total


def scan_file(
    root: Path,
    name: str,
    regex: re2._Regexp,
    found: Findings,
    max_matches: int,
    max_file_bytes: int,
) -> None:
    """Add a file's matching lines to ``found``, or count why it was skipped."""
    reason = refusal(root, name)
    if reason == "outside":
        found.outside.append(name)
        return
    if reason == "hidden":
        found.hidden += 1
        return
    path = root / name
    if not path.is_file():
        return
    try:
        with path.open("rb") as file:
            data = file.read(max_file_bytes + 1)
    except OSError:
        found.unreadable += 1
        return
    if len(data) > max_file_bytes:
        found.large += 1
        return
    if b"\0" in data[:BINARY_SNIFF]:
        found.binary += 1
        return
    found.searched += 1
    hits = 0
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if regex.search(line):
            hits += 1
            shown = line if len(line) <= MAX_LINE else line[:MAX_LINE] + "…"
            found.matches.append(f"{name}:{number}: {shown}")
            if len(found.matches) >= max_matches:
                break
    found.files_with_matches += hits > 0


def summary(found: Findings, picked: int, max_matches: int, max_files: int) -> str:
    """What the model reads: the counts, why the search stopped or skipped files, then the matching lines."""
    lines = [
        f"{len(found.matches)} matching lines in {found.files_with_matches} files"
        f" ({found.searched} text files searched)"
    ]
    if not picked:
        lines.append("no file under the search root matches the glob")
    if len(found.matches) >= max_matches:
        lines.append(f"stopped at max_matches={max_matches}; narrow the pattern or glob for more")
    if picked > max_files:
        lines.append(f"the glob picked more than {max_files:,} files; only {max_files:,} were searched")
    if found.binary or found.large or found.unreadable:
        lines.append(
            f"skipped {found.binary} binary, {found.large} too-large"
            f" and {found.unreadable} unreadable files"
        )
    if found.outside:
        lines.append(
            f"skipped {len(found.outside)} symlinks leading outside the search root:"
            f" {', '.join(found.outside[:10])}"
        )
    if found.hidden:
        lines.append(f"skipped {found.hidden} symlinks to hidden files or folders")
    return "\n".join(lines + [""] + found.matches).rstrip()


def make_file_search(
    root: Path,
    *,
    max_matches: int = 200,
    max_files: int = 5_000,
    max_file_bytes: int = 2_000_000,
) -> BaseTool:
    """The ``file_search`` tool over ``root`` (resolved now, so a later ``chdir`` does not move it)."""
    root = root.expanduser().resolve()
    match_ceiling = max_matches

    @tool
    def file_search(
        pattern: str, glob: str = "**/*", literal: bool = False, max_matches: int = match_ceiling
    ) -> str:
        """Search text files for lines matching `pattern`, like grep; returns `path:line: text`.

        `pattern` is a regular expression in RE2 syntax (Python's, without backreferences or
        lookaround), or plain text with literal=true. `glob` picks files by path relative to
        the search root ("**/*.py", "docs/*.md"). Hidden files and folders are never searched,
        and paths outside the search root are refused.
        """
        regex = compiled(pattern, literal)
        if isinstance(max_matches, bool) or not 1 <= max_matches <= match_ceiling:
            raise ValueError(f"max_matches must be between 1 and {match_ceiling}, got {max_matches!r}")
        if not root.is_dir():
            raise ValueError(f"the search root {root} is not a directory; set AGENT_FILES_ROOT")
        relative = relative_glob(glob, root)
        found, picked = search(
            root,
            regex,
            relative,
            max_matches=max_matches,
            max_files=max_files,
            max_file_bytes=max_file_bytes,
        )
        return summary(found, picked, max_matches, max_files)

    return file_search
