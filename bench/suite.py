"""The benchmarks, in the order ``agent-ng bench`` runs them, and how one run goes.

Each benchmark module has ``NAME`` and ``async def run(size) -> Result`` (and may have
``plot(result, directory) -> list[paths]``). ``size`` is ``full`` (the numbers in the README)
or ``smoke`` (tiny, for the tests).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path
from types import ModuleType

from rich.console import Console

from agent_ng.bench.measure import RESULTS_DIR, Result, save
from agent_ng.bench.report import show, update_readme

MODULES = (
    "streaming", "first_token", "parallel", "checkpoints", "memory", "eta", "service", "langgraph_server", "replicas",
    "scaling",
)


def module(name: str) -> ModuleType:
    if name not in MODULES:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(MODULES)}")
    return importlib.import_module(f"agent_ng.bench.{name}")


def run_one(
    name: str,
    size: str = "full",
    out_dir: Path = RESULTS_DIR,
    readme: bool = False,
    console: Console | None = None,
) -> Result:
    """Run benchmark ``name``, print its tables, save its JSON (and plots), maybe the README."""
    bench = module(name)
    started = time.perf_counter()
    result: Result = asyncio.run(bench.run(size))
    result.duration_s = time.perf_counter() - started
    if hasattr(bench, "plot"):
        result.plots = [str(p) for p in bench.plot(result, out_dir)]
    save(result, out_dir)
    show(result, console)
    if readme:
        update_readme(result)
    return result


def run(
    names: list[str] | None = None,
    size: str = "full",
    out_dir: Path = RESULTS_DIR,
    readme: bool = False,
) -> list[Result]:
    for name in names or []:
        module(name)
    return [run_one(name, size, out_dir, readme) for name in names or MODULES]
