"""Read-only SQL on one SQLite file for the agent, with progress on rows.

The query comes from a model, so reading is enforced three times over: the file is opened
with ``mode=ro`` (SQLite itself refuses to write), the text must be one ``SELECT`` or
``WITH`` statement, and an authorizer lets SQLite run only reads (``SELECT``, reading
columns, functions, recursive CTEs, schema-reading table-valued pragmas), which also
catches a ``WITH ... DELETE``. ``PRAGMA query_only`` is set as well. Rows are fetched in
batches with a progress report after each; the total comes from a ``COUNT(*)`` when that
finishes within a small instruction budget, otherwise progress has no fraction. Every query
has a deadline (SQLite's progress handler interrupts it), a row limit and a byte limit: no
value may be longer than ``max_bytes`` (SQLite's own ``SQLITE_LIMIT_LENGTH``, so SQLite refuses
to build a huge string rather than hand it over; its ``printf`` gives NULL instead), and rows
stop being fetched when the next one would take the result, as JSON, past ``max_bytes``.

It is a sync tool on purpose: LangChain runs it in a worker thread, so the event loop keeps
streaming while SQLite works.

    query = make_sql_query(Path("shop.db"))
    query.invoke({"query": "SELECT name FROM items WHERE price < ?", "params": [10]})
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from time import monotonic
from typing import Any

from langchain_core.tools import BaseTool, tool

from agent_ng.tools import progress

Scalar = str | int | float | None

BATCH_ROWS = 100
COUNT_BUDGET_CALLS = 100
HANDLER_EVERY = 1_000
"""SQLite VM instructions between progress-handler calls: the count gets ~100,000 of them."""
READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
READ_PRAGMAS = frozenset(
    "table_info table_xinfo table_list index_list index_info index_xinfo foreign_key_list"
    " database_list collation_list function_list module_list pragma_list".split()
)
"""Pragmas a query may read as table-valued functions, e.g. ``pragma_table_info('t')``."""
SCHEMA_TABLES = ("sqlite_master", "sqlite_temp_master")
"""Never writable by a query here (``writable_schema`` is off and the file is read-only)."""
ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in (
        "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER"
        " CREATE_TEMP_VIEW CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE"
        " DROP_TEMP_INDEX DROP_TEMP_TABLE DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER"
        " DROP_VIEW INSERT PRAGMA TRANSACTION UPDATE ATTACH DETACH ALTER_TABLE REINDEX"
        " ANALYZE CREATE_VTABLE DROP_VTABLE SAVEPOINT"
    ).split()
}
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(\w*)", re.DOTALL)


class Interrupt:
    """SQLite's progress handler: stops the query past a deadline or past an instruction budget."""

    def __init__(self, deadline: float, budget_calls: int | None = None) -> None:
        self.deadline = deadline
        self.budget_calls = budget_calls
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        over_budget = self.budget_calls is not None and self.calls > self.budget_calls
        return int(over_budget or monotonic() > self.deadline)


class Reads:
    """The authorizer: allow reading, deny anything else and remember what was denied."""

    def __init__(self) -> None:
        self.denied: list[str] = []

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if action in READ_ACTIONS or (action == sqlite3.SQLITE_PRAGMA and arg1 in READ_PRAGMAS):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_UPDATE and arg1 in SCHEMA_TABLES:
            return sqlite3.SQLITE_OK  # SQLite's own check when a table-valued pragma is first used
        what = ACTION_NAMES.get(action, f"action {action}")
        self.denied.append(f"{what} {arg1}" if arg1 else what)
        return sqlite3.SQLITE_DENY


def checked_query(query: str) -> str:
    """The query without a trailing ``;``, if it is a SELECT or WITH; ValueError if not."""
    text = query.strip().rstrip(";").rstrip()
    if not text:
        raise ValueError("query is empty")
    first = _FIRST_WORD.match(text).group(1).upper()
    if first not in ("SELECT", "WITH"):
        raise ValueError(
            f"refused: only a single SELECT or WITH query is allowed (read-only), this one"
            f" starts with {first or 'no keyword'!r}"
        )
    return text


def connect(db: Path, timeout_s: float, max_bytes: int) -> tuple[sqlite3.Connection, Reads]:
    """A connection that can only read ``db`` (a read-only file, ``query_only``, and the ``Reads``
    authorizer) and builds no value longer than ``max_bytes``."""
    if not db.is_file():
        raise ValueError(f"the database {db} does not exist; set AGENT_SQL_DB to a SQLite file")
    connection = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=timeout_s)
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)
    connection.execute("PRAGMA query_only = ON")
    reads = Reads()
    connection.set_authorizer(reads)
    return connection, reads


def cheap_count(connection: sqlite3.Connection, query: str, params: Any, deadline: float) -> int | None:
    """The query's row count if SQLite finds it within a small budget, else None."""
    connection.set_progress_handler(Interrupt(deadline, COUNT_BUDGET_CALLS), HANDLER_EVERY)
    try:
        return connection.execute(f"SELECT COUNT(*) FROM (\n{query}\n)", params).fetchone()[0]
    except sqlite3.Error:
        return None


def fetch_rows(
    cursor: sqlite3.Cursor, max_rows: int, max_bytes: int, total: int | None
) -> tuple[list[list[Any]], bool, bool]:
    """Up to ``max_rows`` rows (as JSON cells) in batches, reporting after each, until the next
    would take their JSON past ``max_bytes``; whether more were left, and whether bytes cut them."""
    rows: list[list[Any]] = []
    used = 0
    goal = min(total, max_rows) if total is not None else None
    while len(rows) < max_rows:
        batch = cursor.fetchmany(min(BATCH_ROWS, max_rows - len(rows)))
        if not batch:
            break
        for row in batch:
            cells = [cell(v) for v in row]
            used += json_size(cells) + len(", ")
            if used > max_bytes:
                return rows, True, True
            rows.append(cells)
        fraction = len(rows) / goal if goal else None
        of = f" of {total:,}" if total is not None else ""
        progress.report(fraction, f"{len(rows):,}{of} rows")
    more = len(rows) == max_rows and cursor.fetchone() is not None
    return rows, more, False


def cell(value: Any) -> Any:
    """A value as JSON can carry it: a blob becomes a note of its size."""
    return f"<blob of {len(value):,} bytes>" if isinstance(value, bytes) else value


def json_size(value: Any) -> int:
    """Bytes of ``value`` in the tool's JSON."""
    return len(json.dumps(value, ensure_ascii=False, default=str).encode())


def cut_note(row_count: int, max_bytes: int) -> str:
    """What the result says when the byte limit left rows out."""
    return f"rows after the first {row_count} left out: a result is at most {max_bytes:,} bytes"


def run_query(
    db: Path, query: str, params: Any, max_rows: int, max_bytes: int, timeout_s: float
) -> dict[str, Any]:
    """Run one read-only query within ``timeout_s``; the tool's result, at most ``max_bytes`` as
    JSON: columns, rows, whether some were left out (and a note when bytes left them out)."""
    text = checked_query(query)
    deadline = monotonic() + timeout_s
    connection, reads = connect(db, timeout_s, max_bytes)
    try:
        total = cheap_count(connection, text, params, deadline)
        reads.denied.clear()
        connection.set_progress_handler(Interrupt(deadline), HANDLER_EVERY)
        cursor = connection.execute(text, params)
        columns = [d[0] for d in cursor.description or ()]
        room = max_bytes - envelope_size(columns, total, max_rows, max_bytes)
        rows, more, cut = fetch_rows(cursor, max_rows, room, total)
    except sqlite3.DataError as exc:
        if "too big" not in str(exc):
            raise ValueError(f"SQLite error: {exc}") from None
        raise ValueError(
            f"refused: a value in the result is over the {max_bytes:,}-byte limit of a tool"
            " result; select a part of it (substr(x, 1, 1000)) or its length(x)"
        ) from None
    except sqlite3.ProgrammingError as exc:
        if "one statement at a time" in str(exc):
            raise ValueError("refused: only a single statement is allowed") from None
        raise ValueError(f"bad query: {exc}") from None
    except sqlite3.DatabaseError as exc:
        if reads.denied:
            raise ValueError(
                f"refused: the query is read-only, but it asked to {', '.join(reads.denied)}"
            ) from None
        if str(exc) == "interrupted":
            raise TimeoutError(f"the query took longer than {timeout_s:g} s and was stopped") from None
        raise ValueError(f"SQLite error: {exc}") from None
    finally:
        connection.close()
    return result_of(columns, rows, total, more, max_bytes, cut=cut)


def envelope_size(columns: list[str], total: int | None, max_rows: int, max_bytes: int) -> int:
    """Bytes of the result besides its rows, the note included, room left for two row counts."""
    empty = result_of(columns, [], total, True, max_bytes, cut=True)
    return json_size(empty) + 2 * len(str(max_rows))


def result_of(
    columns: list[str], rows: list[list[Any]], total: int | None, more: bool, max_bytes: int,
    *, cut: bool,
) -> dict[str, Any]:
    """The tool's result; with ``cut``, a note that the byte limit left rows out."""
    result = {
        "columns": columns,
        "row_count": len(rows),
        "truncated": more,
        "total_rows": total,
        "rows": rows,
    }
    return {**result, "note": cut_note(len(rows), max_bytes)} if cut else result


def make_sql_query(
    db: Path, *, max_rows: int = 500, max_bytes: int = 65_536, timeout_s: float = 10.0
) -> BaseTool:
    """The ``sql_query`` tool on the SQLite file ``db``; ``max_bytes`` bounds its result's JSON."""
    db = db.expanduser().resolve()
    row_ceiling = max_rows

    @tool
    def sql_query(
        query: str,
        params: list[Scalar] | dict[str, Scalar] | None = None,
        max_rows: int = row_ceiling,
    ) -> str:
        """Run one read-only SQL query (SELECT or WITH) on the SQLite database; rows as JSON.

        Use ? or :name placeholders with `params` (a list or an object). Returns columns,
        rows (at most `max_rows`, and only as many as fit the result's byte limit), and
        whether rows were left out. Writes are refused.
        """
        if isinstance(max_rows, bool) or not 1 <= max_rows <= row_ceiling:
            raise ValueError(f"max_rows must be between 1 and {row_ceiling}, got {max_rows!r}")
        result = run_query(
            db, query, params if params is not None else (), max_rows, max_bytes, timeout_s
        )
        return json.dumps(result, ensure_ascii=False, default=str)

    return sql_query
