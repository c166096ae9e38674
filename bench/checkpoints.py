"""Benchmark 4: what checkpointing costs, per step and as threads grow.

Savers: none (the reference), memory, SQLite (a temporary file) and PostgreSQL (a schema of
its own in ``AGENT_BENCH_POSTGRES_URL``, default the local ``test`` database, dropped after).
One turn is model -> one tool -> model (three supersteps, four checkpoints with the input).

- Per-step cost: one turn on a fresh thread, minus the same turn without a checkpointer, / 3.
- Threads of about 10, 100 and 1,000 messages are built turn by turn (as a conversation would
  build them), then timed: load (``aget_state``) and resume (one more turn on the thread; for
  "none", the same turn with the whole history as input).
- SQLite and PostgreSQL once more with LangGraph's own serializer (``JsonPlusSerializer``), which
  deserializes each load anew, where ours (``agent_ng.persistence.load_memo``) deserializes a
  checkpoint loaded again within a run once: the before/after of that memo in the same run. Each
  resume follows a load of the same thread, as a run in the service follows its check.
- Stored size of the 1,000-message thread with every checkpoint kept, and the size of its
  message list serialized once (what the newest checkpoint alone holds); then again after
  pruning it to the default retention (``agent_ng.persistence.retention``: the last 20 checkpoints), which is
  what a thread keeps when each run prunes its thread as it ends.

The savers are opened with retention off, so the threads grow as they would without it.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent_ng.bench.measure import Result, Table, median
from agent_ng.bench.models import ToolTurnModel
from agent_ng.bench.paths import bench_settings
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.persistence.checkpoint import open_checkpointer
from agent_ng.persistence.retention import Retention, prune

NAME = "checkpoints"
POSTGRES_URL = os.environ.get(
    "AGENT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
STEPS_PER_TURN = 3
QUESTION = "Please look this up for me and tell me what you find about it. " * 2
RESULT = "A line of tool output, the kind a search or a file read returns. " * 8
KEEP_ALL = Retention(keep_checkpoints=0, thread_ttl_s=0)
NO_MEMO = ", no load memo"
"""The suffix of a saver's second side, on LangGraph's own serializer."""
RETAINED = Retention()


@dataclass(frozen=True)
class Size:
    lengths: tuple[int, ...]
    fresh_rounds: int
    rounds: int


SIZES = {"full": Size((10, 100, 1000), 15, 7), "smoke": Size((4, 8), 1, 1)}


@tool
async def lookup(i: int) -> str:
    """Return a tool result of a realistic size."""
    return RESULT


def without_memo(saver: BaseCheckpointSaver) -> BaseCheckpointSaver:
    saver.serde = JsonPlusSerializer()
    return saver


async def open_postgres(stack: AsyncExitStack) -> tuple[BaseCheckpointSaver | None, str]:
    """A saver in a fresh schema (dropped on exit), or None and why not."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg not installed (pip install 'agent-ng[bench]')"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    except psycopg.OperationalError as e:
        return None, f"PostgreSQL unreachable at {POSTGRES_URL}: {e}".splitlines()[0]
    await admin.execute(f"CREATE SCHEMA {schema}")

    async def drop() -> None:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()

    stack.push_async_callback(drop)
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    return await stack.enter_async_context(open_checkpointer(url, retention=KEEP_ALL)), ""


async def thread_bytes(name: str, saver: BaseCheckpointSaver, thread_id: str) -> int:
    """Bytes stored for one thread: every checkpoint, blob and pending write."""
    name = name.removesuffix(NO_MEMO)
    if name == "memory":
        assert isinstance(saver, InMemorySaver)
        total = sum(len(v[1]) for k, v in saver.blobs.items() if k[0] == thread_id)
        for ns in saver.storage.get(thread_id, {}).values():
            total += sum(len(c[1]) + len(m[1]) for c, m, _ in ns.values())
        for key, writes in saver.writes.items():
            if key[0] == thread_id:
                total += sum(len(w[2][1]) for w in writes.values())
        return total
    if name == "sqlite":
        queries = [
            "SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints "
            "WHERE thread_id = ?",
            "SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?",
        ]
        total = 0
        for query in queries:
            async with saver.conn.execute(query, (thread_id,)) as cursor:
                total += (await cursor.fetchone())[0]
        return total
    queries = [
        "SELECT coalesce(sum(pg_column_size(checkpoint) + pg_column_size(metadata)), 0) AS n "
        "FROM checkpoints WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(blob)), 0) AS n FROM checkpoint_blobs WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(blob)), 0) AS n FROM checkpoint_writes WHERE thread_id = %s",
    ]
    total = 0
    async with saver.conn.connection() as conn, conn.cursor() as cursor:
        for query in queries:
            await cursor.execute(query, (thread_id,))
            total += (await cursor.fetchone())["n"]
    return int(total)


async def run(size: str = "full") -> Result:
    spec = SIZES[size]
    model = ToolTurnModel(tool="lookup", calls=1, answer_words=40)
    settings = bench_settings()
    notes: list[str] = []
    async with AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        savers: dict[str, BaseCheckpointSaver | None] = {
            "none": None,
            "memory": InMemorySaver(),
            "sqlite": await stack.enter_async_context(
                open_checkpointer(f"sqlite:///{Path(tmp) / 'checkpoints.db'}", retention=KEEP_ALL)
            ),
        }
        savers[f"sqlite{NO_MEMO}"] = without_memo(await stack.enter_async_context(
            open_checkpointer(f"sqlite:///{Path(tmp) / 'without-memo.db'}", retention=KEEP_ALL)
        ))
        postgres, why_not = await open_postgres(stack)
        if postgres is not None:
            savers["postgres"] = postgres
            savers[f"postgres{NO_MEMO}"] = without_memo((await open_postgres(stack))[0])
        else:
            notes.append(why_not)
        graphs = {name: build_graph(model, [lookup], saver, settings) for name, saver in savers.items()}
        stored = [name for name in savers if name != "none"]

        async def turn(name: str, thread_id: str | None, history: list | None = None) -> float:
            input = {"messages": [*(history or []), HumanMessage(QUESTION)]}
            config = {"configurable": {"thread_id": thread_id or uuid.uuid4().hex}}
            start = time.perf_counter()
            async for event in stream(graphs[name], input, config):
                if event.type == "run_end" and event.status != "done":
                    raise RuntimeError(f"{name}: run ended {event.status}")
            return time.perf_counter() - start

        for name in savers:
            await turn(name, None)
        fresh: dict[str, list[float]] = {name: [] for name in savers}
        for r in range(spec.fresh_rounds):
            order = list(savers)[r % len(savers):] + list(savers)[: r % len(savers)]
            for name in order:
                fresh[name].append(await turn(name, None))

        async def messages(name: str, thread_id: str) -> list:
            state = await graphs[name].aget_state({"configurable": {"thread_id": thread_id}})
            return state.values.get("messages", [])

        threads = {length: f"thread-{length}" for length in spec.lengths}
        build_s: dict[str, float] = {name: 0.0 for name in stored}
        for length, thread_id in threads.items():
            while len(await messages(stored[0], thread_id)) < length:
                for name in stored:
                    build_s[name] += await turn(name, thread_id)
        counts = {length: len(await messages(stored[0], tid)) for length, tid in threads.items()}
        longest = threads[spec.lengths[-1]]
        sizes = {name: await thread_bytes(name, savers[name], longest) for name in stored if NO_MEMO not in name}
        state_bytes = len(JsonPlusSerializer().dumps_typed(await messages("memory", longest))[1])

        load: dict[tuple[str, int], list[float]] = {}
        resume: dict[tuple[str, int], list[float]] = {}
        for r in range(spec.rounds):
            for length, thread_id in threads.items():
                history = await messages("memory", thread_id)
                order = list(savers)[r % len(savers):] + list(savers)[: r % len(savers)]
                for name in order:
                    if name == "none":
                        resume.setdefault((name, length), []).append(
                            await turn(name, None, history)
                        )
                        continue
                    config = {"configurable": {"thread_id": thread_id}}
                    start = time.perf_counter()
                    await graphs[name].aget_state(config)
                    load.setdefault((name, length), []).append(time.perf_counter() - start)
                    resume.setdefault((name, length), []).append(await turn(name, thread_id))

        retained_n = len(await messages(stored[0], longest))
        unpruned: dict[str, int] = {}
        pruned: dict[str, int] = {}
        for name in stored:
            if name != "memory" and NO_MEMO not in name:
                unpruned[name] = await thread_bytes(name, savers[name], longest)
                await prune(savers[name], RETAINED, threads=[longest])
                pruned[name] = await thread_bytes(name, savers[name], longest)

    none_turn = median(fresh["none"])
    per_step = {
        name: (median(fresh[name]) - none_turn) / STEPS_PER_TURN * 1e3 for name in savers
    }
    longest_n = counts[spec.lengths[-1]]
    tables = [
        Table(
            f"Checkpoint cost per step: one turn (3 steps) on a fresh thread, median of "
            f"{spec.fresh_rounds}",
            ["saver", "turn ms", "per step ms (over none)"],
            [[name, round(median(fresh[name]) * 1e3, 2), round(per_step[name], 2)] for name in savers],
        ),
        Table(
            f"Threads as they grow: load (aget_state) / resume (one more turn) in ms, median of "
            f"{spec.rounds}",
            ["saver", *[f"{counts[length]} msgs: load / resume" for length in spec.lengths],
             "per step at longest (ms over none)"],
            [
                [
                    name,
                    *[
                        f"{median(load[(name, length)]) * 1e3:.2f} / "
                        f"{median(resume[(name, length)]) * 1e3:.1f}"
                        if name != "none"
                        else f"- / {median(resume[(name, length)]) * 1e3:.1f}"
                        for length in spec.lengths
                    ],
                    round(
                        (median(resume[(name, spec.lengths[-1])])
                         - median(resume[("none", spec.lengths[-1])])) / STEPS_PER_TURN * 1e3,
                        2,
                    ),
                ]
                for name in savers
            ],
            note="none resumes by sending the whole history as input (a stateless server).",
        ),
        Table(
            f"Stored size of a {longest_n}-message thread built turn by turn (every checkpoint kept)",
            ["saver", "MB stored", "MB per 1,000 messages", "build time s"],
            [
                [
                    name,
                    round(sizes[name] / 1e6, 2),
                    round(sizes[name] / 1e6 * 1000 / longest_n, 2),
                    round(build_s[name], 1),
                ]
                for name in sizes
            ]
            + [["(message list serialized once)", round(state_bytes / 1e6, 3),
                round(state_bytes / 1e6 * 1000 / longest_n, 3), None]],
            note="; ".join(notes),
        ),
        Table(
            f"Retention: MB per 1,000 messages of the {retained_n}-message thread, every checkpoint "
            f"kept vs pruned to the last {RETAINED.keep_checkpoints} (the default)",
            ["saver", "before", "after", "after / before"],
            [
                [
                    name,
                    round(unpruned[name] / 1e6 * 1000 / retained_n, 3),
                    round(pruned[name] / 1e6 * 1000 / retained_n, 3),
                    round(pruned[name] / unpruned[name], 3),
                ]
                for name in pruned
            ],
            note="agent-ng prune, or each run's own prune when it ends (persistence/retention.py)",
        ),
    ]
    data: dict[str, Any] = {
        "savers": list(savers),
        "skipped": notes,
        "per_step_ms": per_step,
        "fresh_turn_ms": {name: median(v) * 1e3 for name, v in fresh.items()},
        "message_counts": {str(k): v for k, v in counts.items()},
        "load_ms": {f"{n}/{counts[length]}": median(v) * 1e3 for (n, length), v in load.items()},
        "resume_ms": {f"{n}/{counts[length]}": median(v) * 1e3 for (n, length), v in resume.items()},
        "thread_bytes": sizes,
        "retention_messages": retained_n,
        "thread_bytes_before_retention": unpruned,
        "thread_bytes_retained": pruned,
        "state_bytes": state_bytes,
        "build_s": build_s,
    }
    return Result(NAME, size, tables, data)
