"""Show a ``Result``: rich tables on the terminal, Markdown in ``bench/README.md``.

The README keeps each benchmark's latest tables between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``; ``update_readme`` replaces that block (or appends one) and copies the
result's plots next to the README.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from agent_ng.bench.measure import Result, Table

README = Path(__file__).parent / "README.md"


def show(result: Result, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 160)
    for table in result.tables:
        rich = RichTable(title=table.title, caption=table.note or None, title_justify="left")
        for i, column in enumerate(table.columns):
            rich.add_column(column, justify="left" if i == 0 else "right")
        for row in table.rows:
            rich.add_row(*(cell(v) for v in row))
        console.print(rich)
    for plot in result.plots:
        console.print(f"plot: {plot}")


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(result: Result) -> str:
    m = result.machine
    lines = [
        f"_Ran {result.started} on {m['nproc']} x {m['cpu']}, Python {m['python']}, "
        f"load average at start {m['load_average'][0]}; {versions(m['versions'])}; "
        f"size `{result.size}`, {result.duration_s:.0f} s._",
        "",
    ]
    for table in result.tables:
        lines += [f"**{table.title}**", "", markdown_table(table)]
        if table.note:
            lines += ["", f"_{table.note}_"]
        lines.append("")
    for plot in result.plots:
        lines += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def markdown_table(table: Table) -> str:
    head = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join([head, rule, *body])


def versions(packages: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {v}" for name, v in packages.items() if v)


def update_readme(result: Result, readme: Path = README) -> None:
    start, end = f"<!-- bench:{result.benchmark} -->", f"<!-- /bench:{result.benchmark} -->"
    block = f"{start}\n{markdown(result)}{end}"
    text = readme.read_text() if readme.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    readme.write_text(text)
    for plot in result.plots:
        shutil.copyfile(plot, readme.parent / Path(plot).name)
