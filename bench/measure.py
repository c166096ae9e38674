"""What every benchmark shares: timed runs, medians, the machine, result files.

A comparison runs all its sides in one process, round-robin (the starting side rotates each
round) for several rounds, so drift on a shared machine hits every side alike; tables report
medians. ``timed`` measures one run: wall, CPU (process time) and time in the collector. Each
benchmark module returns a ``Result``; ``save`` writes it as JSON under ``bench/results/`` with
the machine it ran on.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
RESULTS_DIR = Path(__file__).parent / "results"
PACKAGES = (
    "langgraph",
    "langgraph-prebuilt",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "langchain-core",
    "langchain",
)


@dataclass(frozen=True, slots=True)
class Timing:
    wall_s: float
    cpu_s: float
    gc_s: float
    """Time spent inside the garbage collector during the run."""


@dataclass(slots=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass(slots=True)
class Result:
    benchmark: str
    size: str
    tables: list[Table]
    data: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=lambda: machine())
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    duration_s: float = 0.0
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GcClock:
    """Adds up the time the collector runs, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: Mapping[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def timed(run: Callable[[], Awaitable[T]]) -> tuple[Timing, T]:
    """Run once; its wall, CPU and collector time, and what it returned."""
    with GcClock() as clock:
        cpu, wall = time.process_time(), time.perf_counter()
        value = await run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Timing(wall, cpu, clock.total), value


def median(values: list[float]) -> float:
    return statistics.median(values)


def rotated(sides: list[T], round_: int) -> list[T]:
    """The sides in the order of round ``round_``: each round starts with the next side."""
    shift = round_ % len(sides)
    return sides[shift:] + sides[:shift]


def machine() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save(result: Result, out_dir: Path = RESULTS_DIR) -> Path:
    """Write the result as ``<benchmark>-<UTC time>.json`` and as ``<benchmark>-latest.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = result.started.replace(":", "").replace("+0000", "Z")
    text = json.dumps(result.to_dict(), indent=2, default=str)
    path = out_dir / f"{result.benchmark}-{stamp}.json"
    path.write_text(text)
    (out_dir / f"{result.benchmark}-latest.json").write_text(text)
    return path


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm``."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server started in another process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain_numbers(axis: Any) -> None:
    """Ticks of a log-scaled ``axis`` as plain numbers (10, 100, 1000), no minor labels."""
    import matplotlib.ticker

    axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def label_panel(ax: Any, title: str, xlabel: str) -> None:
    """A panel's title, x label, grid and small legend, as every bench figure has them."""
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig: Any, directory: Path, name: str, dpi: int = 100) -> list[Path]:
    """Write a matplotlib figure as ``directory/name.png``, close it, return ``[path]``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return [path]
