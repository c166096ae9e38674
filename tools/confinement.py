"""Which paths under a root a tool may read: one rule for a glob's segments and for every path.

A path is refused when a component of it is ``..`` (it leaves the root) or starts with a dot
(hidden, as ripgrep and ``ls`` treat it), judged both as written and once resolved (symlinks
followed), and when it resolves outside the root. A glob is judged by the same rule, segment by
segment, as wcmatch reads each segment: escapes removed, since wcmatch walks a segment that
spells ``..`` (``\\.\\.``, ``.\\.``) into the parent directory, so a spelling must be caught
before the walk, not only in what it finds.

    refusal(Path("/srv/docs"), ".git/config")  # 'hidden'
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Literal

Refusal = Literal["outside", "hidden"]


def component_refusal(part: str) -> Refusal | None:
    """Whether one path component leaves the root (``..``) or is hidden (``.name``)."""
    if part == "..":
        return "outside"
    if part.startswith(".") and part != ".":
        return "hidden"
    return None


def first_refusal(parts: tuple[str, ...] | list[str]) -> Refusal | None:
    """The refusal of the first component refused, ``outside`` before ``hidden``."""
    found = {component_refusal(part) for part in parts}
    return "outside" if "outside" in found else "hidden" if "hidden" in found else None


def refusal(root: Path, name: str) -> Refusal | None:
    """Why the path ``name`` (relative to the resolved ``root``) may not be read, or None."""
    if written := first_refusal(PurePath(name).parts):
        return written
    resolved = (root / name).resolve()
    if not resolved.is_relative_to(root):
        return "outside"
    return first_refusal(resolved.relative_to(root).parts)


def glob_refusal(glob: str) -> Refusal | None:
    """Why a relative glob may not be walked: one of its segments, escapes removed, is refused."""
    return first_refusal([segment.replace("\\", "") for segment in glob.split("/")])
