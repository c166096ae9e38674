"""``agent-ng bench [NAME ...]``: run the benchmarks in bench/ (all by default).

    agent-ng bench                  # everything, full size (under 10 minutes on 2 cores)
    agent-ng bench streaming parallel --readme
    agent-ng bench --smoke          # tiny sizes: checks that each one runs
"""

from __future__ import annotations

from typing import Annotated

import typer

from agent_ng.bench.suite import MODULES, module, run


def bench(
    names: Annotated[
        list[str] | None,
        typer.Argument(help=f"{', '.join(MODULES)} (default: all)."),
    ] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="Tiny sizes, to check they run.")] = False,
    readme: Annotated[
        bool, typer.Option("--readme", help="Write the tables into bench/README.md.")
    ] = False,
) -> None:
    """Measure streaming cost, first-token time, parallel tools, checkpoints, memory, ETAs and the service."""
    for name in names or []:
        try:
            module(name)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="NAME") from e
    run(names or None, "smoke" if smoke else "full", readme=readme)
