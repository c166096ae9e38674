"""Replicas starting together on a fresh PostgreSQL schema set it up once, without deadlock.

The migrations build indexes with ``CREATE INDEX CONCURRENTLY``, which waits for every older
transaction; ``set_up`` (persistence/checkpoint.py) makes the waiting replicas poll a session lock, so
neither a blocked lock call nor an open transaction is there for it to wait on.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention
from tests.helpers.system import POSTGRES_URL

GUARD_S = 60
pytestmark = pytest.mark.needs("postgres")


async def test_three_replicas_set_up_a_fresh_schema_together():
    schema = f"setup_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"

            async def replica() -> int:
                async with open_checkpointer(url, retention=Retention(0, 0)) as saver:
                    async with saver.conn.connection() as conn:
                        row = await (await conn.execute("SELECT max(v) AS v FROM checkpoint_migrations")).fetchone()
                        return row["v"]

            async with asyncio.timeout(GUARD_S):
                versions = await asyncio.gather(replica(), replica(), replica())
            from langgraph.checkpoint.postgres.base import MIGRATIONS

            assert versions == [len(MIGRATIONS) - 1] * 3
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
