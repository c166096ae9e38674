"""``sql_query``: rows with progress, and every kind of write refused with the file unchanged."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.graph.toolset import builtin_tools
from agent_ng.settings import Settings
from agent_ng.tools import progress
from agent_ng.tools.registry import spec_of
from agent_ng.tools.sql_query import BATCH_ROWS, make_sql_query
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

ROWS = 1_000


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB)")
        connection.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(i, f"item {i}", i / 10, b"\0" * 3) for i in range(ROWS)],
        )
    connection.close()
    return path


@contextmanager
def recorded_progress() -> Iterator[list[dict]]:
    records: list[dict] = []
    with progress.tool_call_scope("call_1", "sql_query", records.append):
        yield records


def query(db: Path, **args) -> dict:
    return json.loads(make_sql_query(db, max_rows=250).invoke(args))


def test_returns_rows_with_progress_per_batch_against_a_known_total(db):
    with recorded_progress() as records:
        result = query(db, query="SELECT id, name FROM items WHERE id < ? ORDER BY id", params=[120])
    assert result["columns"] == ["id", "name"]
    assert result["rows"][:2] == [[0, "item 0"], [1, "item 1"]]
    assert result["row_count"] == 120 and result["total_rows"] == 120 and not result["truncated"]
    assert [(r["progress"], r["message"]) for r in records] == [
        (BATCH_ROWS / 120, f"{BATCH_ROWS} of 120 rows"),
        (1.0, "120 of 120 rows"),
    ]


def test_the_row_limit_cuts_and_says_so(db):
    with recorded_progress() as records:
        result = query(db, query="SELECT * FROM items;")
    assert result["row_count"] == 250 and result["truncated"] and result["total_rows"] == ROWS
    assert result["rows"][0] == [0, "item 0", 0.0, "<blob of 3 bytes>"]
    assert [r["progress"] for r in records] == [100 / 250, 200 / 250, 1.0]


def test_an_expensive_count_is_skipped_and_progress_has_no_fraction(db):
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"
    with recorded_progress() as records:
        result = query(db, query=endless, max_rows=150)
    assert result["row_count"] == 150 and result["truncated"] and result["total_rows"] is None
    assert [(r["progress"], r["message"]) for r in records] == [(None, "100 rows"), (None, "150 rows")]


def test_named_parameters_and_schema_pragmas_are_readable(db):
    result = query(db, query="SELECT name FROM items WHERE id = :id", params={"id": 7})
    assert result["rows"] == [["item 7"]]
    columns = query(db, query="SELECT name FROM pragma_table_info('items')")
    assert [row[0] for row in columns["rows"]] == ["id", "name", "price", "data"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO items (name) VALUES ('x')", "starts with 'INSERT'"),
        ("UPDATE items SET price = 0", "starts with 'UPDATE'"),
        ("DELETE FROM items", "starts with 'DELETE'"),
        ("DROP TABLE items", "starts with 'DROP'"),
        ("ATTACH DATABASE ':memory:' AS other", "starts with 'ATTACH'"),
        ("PRAGMA user_version = 5", "starts with 'PRAGMA'"),
        ("/* hi */ -- there\n CREATE TABLE t (x)", "starts with 'CREATE'"),
        ("SELECT 1; DROP TABLE items", "only a single statement is allowed"),
        ("SELECT 1; SELECT 2", "only a single statement is allowed"),
        ("WITH doomed AS (SELECT 1) DELETE FROM items", "asked to DELETE items"),
        ("WITH x AS (SELECT 1) INSERT INTO items (name) SELECT 'x' FROM x", "asked to INSERT items"),
        ("SELECT * FROM pragma_user_version", "asked to PRAGMA user_version"),
        ("", "query is empty"),
    ],
)
def test_writes_are_refused_and_the_file_is_unchanged(db, sql, message):
    before = db.read_bytes()
    with pytest.raises(ValueError, match=message):
        query(db, query=sql)
    assert db.read_bytes() == before


def test_bad_queries_and_arguments_say_what_is_wrong(db, tmp_path):
    with pytest.raises(ValueError, match="Incorrect number of bindings"):
        query(db, query="SELECT * FROM items WHERE id = ?")
    with pytest.raises(ValueError, match="SQLite error: no such table: nope"):
        query(db, query="SELECT * FROM nope")
    with pytest.raises(ValueError, match="max_rows must be between 1 and 250"):
        query(db, query="SELECT 1", max_rows=251)
    with pytest.raises(ValueError, match="does not exist; set AGENT_SQL_DB"):
        query(tmp_path / "missing.db", query="SELECT 1")
    assert not (tmp_path / "missing.db").exists()


def test_a_query_past_its_deadline_is_stopped(db):
    """Would run for hours without the deadline: 10^12 rows summed."""
    huge = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 1000000000000) SELECT sum(x) FROM n"
    with pytest.raises(TimeoutError, match="took longer than 0.05 s"):
        make_sql_query(db, timeout_s=0.05).invoke({"query": huge})


def test_the_tool_is_registered_only_with_a_database(db):
    names = lambda settings: [t.name for t in builtin_tools(settings)]  # noqa: E731
    assert "sql_query" not in names(Settings(checkpoint_url="memory://"))
    tools = {t.name: t for t in builtin_tools(Settings(checkpoint_url="memory://", sql_db=db))}
    assert spec_of(tools["sql_query"]).concurrency_group == "sql"
    assert tools["sql_query"].coroutine is None, "a sync tool, so LangChain runs it in a worker thread"


async def test_through_the_graph_rows_stream_as_progress(db):
    model = ScriptedModel(replies=[calls(("sql_query", {"query": "SELECT id FROM items"})), Reply(text="ok")])
    settings = Settings(checkpoint_url="memory://", system_prompt="", sql_db=db, sql_max_rows=300)
    graph = build_graph(model, checkpointer=InMemorySaver(), settings=settings)
    async with asyncio.timeout(10):
        events = [
            e async for e in stream(graph, {"messages": [HumanMessage("ids?")]}, {"configurable": {"thread_id": "q"}})
        ]
    assert [e.message for e in events if e.type == "tool_progress"] == [
        "100 of 1,000 rows", "200 of 1,000 rows", "300 of 1,000 rows"
    ]
    [result] = [e for e in events if e.type == "tool_result"]
    assert result.status == "success" and '"row_count": 300' in result.content


def test_a_huge_value_is_never_built(db):
    """Without SQLite's length limit this one value would take 100 MB (issue 17)."""
    tool = make_sql_query(db, max_bytes=10_000)
    huge = json.loads(tool.invoke({"query": "SELECT printf('%.*c', 100000000, 'x') AS v"}))
    assert huge["rows"] == [[None]], "SQLite's printf gives NULL past the length limit"
    with pytest.raises(ValueError, match="over the 10,000-byte limit.*substr"):
        tool.invoke({"query": "SELECT replace(hex(zeroblob(20000)), '0', 'x')"})


def test_rows_stop_at_the_byte_budget_and_the_result_says_so(db):
    budget = 5_000
    text = make_sql_query(db, max_rows=250, max_bytes=budget).invoke(
        {"query": "SELECT id, name || ' é ' || name AS label FROM items ORDER BY id"}
    )
    result = json.loads(text)
    assert len(text.encode()) <= budget
    assert 50 < result["row_count"] < 250 and result["truncated"]
    assert result["note"] == (
        f"rows after the first {result['row_count']} left out: a result is at most {budget:,} bytes"
    )
    assert result["rows"][-1][0] == result["row_count"] - 1
