"""Hostile cases: a tool result too big for the thread, against the real ``agent-ng serve``.

A model asks ``sql_query`` for one value of ``HUGE_BYTES`` (``printf('%.*c', n, 'x')``) or for
many rows; the result must come back cut to the output bound with a note saying so, the thread's
checkpoints must stay small through follow-up questions (each checkpoint stores the whole
history again), the server's memory must not grow by the value's size, and ``/healthz`` must
answer throughout.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.helpers.hostile import HealthWatch, Reply, Server, agent_serve, openai_server
from tests.helpers.sse import events

HUGE_BYTES = 100_000_000
OUTPUT_BOUND = 65_536
"""``AGENT_TOOL_MAX_OUTPUT_BYTES``' default."""
FOLLOW_UPS = 3
SMALL_STORE_BYTES = 4_000_000
"""The thread's SQLite file after the follow-ups: every checkpoint holds the tool result again."""
RSS_GROWTH_BYTES = 60_000_000
RUN_GUARD_S = 120


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        connection.executemany(
            "INSERT INTO notes (body) VALUES (?)", [("é" * 999,) for _ in range(500)]
        )
    connection.close()
    return path


async def ask(server: Server, thread: str, question: str) -> list:
    """One run on ``thread`` to its ``run_end``; its events."""
    async with httpx.AsyncClient(base_url=server.url, timeout=RUN_GUARD_S) as client:
        async with client.stream(
            "POST", f"/threads/{thread}/runs/stream", json={"input": question}
        ) as response:
            assert response.status_code == 200, await response.aread()
            return [frame async for frame in events(response)]


def thread_messages(server: Server, thread: str) -> list[dict]:
    return httpx.get(f"{server.url}/threads/{thread}", timeout=RUN_GUARD_S).json()["messages"]


def stored_bytes(server: Server) -> int:
    """The checkpoint database's size on disk, write-ahead log included."""
    return sum(p.stat().st_size for p in server.home.glob("threads.db*"))


@pytest.mark.parametrize(
    ("query", "says"),
    [
        pytest.param(
            f"SELECT printf('%.*c', {HUGE_BYTES}, 'x') AS huge", None, id="one-huge-value"
        ),
        pytest.param("SELECT body, body AS again FROM notes", "left out", id="many-rows"),
    ],
)
async def test_a_huge_sql_result_is_cut_and_the_thread_stays_small(tmp_path, shop, query, says):
    replies = [Reply(tool_calls=[("sql_query", {"query": query})]), Reply(text="done")]
    replies += [Reply(text=f"follow-up {i}") for i in range(FOLLOW_UPS)]
    with (
        openai_server(replies) as model_url,
        agent_serve(tmp_path, model_url=model_url, env={"AGENT_SQL_DB": str(shop)}) as server,
    ):
        rss_before = server.rss_bytes()
        with HealthWatch(server.url) as health:
            first = await ask(server, "t1", "show me everything")
            for i in range(FOLLOW_UPS):
                await ask(server, "t1", f"and then? {i}")
        rss_growth = server.rss_bytes() - rss_before
        [result] = [m for m in thread_messages(server, "t1") if m["role"] == "tool"]

    assert first[-1].event == "run_end" and first[-1].data["status"] == "done"
    content = result["content"]
    assert len(content.encode()) <= OUTPUT_BOUND
    assert says is None or says in content, content[-300:]
    assert stored_bytes(server) < SMALL_STORE_BYTES
    assert rss_growth < RSS_GROWTH_BYTES
    health.assert_responsive()
