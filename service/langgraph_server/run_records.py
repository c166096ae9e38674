"""The LangGraph Server API's run records, kept in this process: what ``GET /threads/{id}/runs`` lists.

LangGraph Server keeps a record of each run: its thread, assistant, status, metadata and the body
it was made with. Clients read it: ``runs.get`` and ``runs.list``, and ``langgraph_sdk`` asks
whether a run whose stream closed is still ``pending`` or ``running`` before it reconnects.
A run's events live in the event log and its thread in the checkpointer; these records are only
the status and identity, so they are kept here, bounded: past ``max_runs`` the oldest finished
runs are forgotten (a run still going is never dropped).

    records = RunRecords()
    records.add(RunRecord(run_id, thread_id, ASSISTANT_ID, metadata, "enqueue", kwargs))
    records.set_status(run_id, "running")
    records.latest_status(thread_id)          # "running"
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

RunStatus = Literal["pending", "running", "error", "success", "timeout", "interrupted"]
ACTIVE: tuple[RunStatus, ...] = ("pending", "running")
MAX_RUNS = 10_000
"""Run records kept at most by default (a record is a few hundred bytes plus the run's body)."""


def now() -> datetime:
    """The time a record notes (UTC, as LangGraph Server's are)."""
    return datetime.now(UTC)


@dataclass
class RunRecord:
    """One run as LangGraph Server describes it (``langgraph_sdk.schema.Run``)."""

    run_id: str
    thread_id: str
    assistant_id: str
    metadata: dict[str, Any]
    multitask_strategy: str
    kwargs: dict[str, Any]
    """The body the run was made with, as LangGraph Server keeps it (input, command, config...)."""
    status: RunStatus = "pending"
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_json(self) -> dict[str, Any]:
        """The run as ``GET /threads/{id}/runs/{run_id}`` answers it."""
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "metadata": self.metadata,
            "status": self.status,
            "kwargs": self.kwargs,
            "multitask_strategy": self.multitask_strategy,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class RunRecords:
    """The runs this process made through the LangGraph Server API, newest last."""

    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()

    def add(self, record: RunRecord) -> None:
        self._runs[record.run_id] = record
        if len(self._runs) > self.max_runs:
            self._drop_finished(len(self._runs) - self.max_runs)

    def _drop_finished(self, count: int) -> None:
        finished = [run_id for run_id, run in self._runs.items() if not run.active][:count]
        for run_id in finished:
            del self._runs[run_id]

    def get(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    def discard(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def set_status(self, run_id: str, status: RunStatus) -> None:
        if (run := self._runs.get(run_id)) is not None:
            run.status, run.updated_at = status, now()
            if not run.active and len(self._runs) > self.max_runs:
                self._drop_finished(len(self._runs) - self.max_runs)

    def of_thread(self, thread_id: str) -> list[RunRecord]:
        """The thread's runs, newest first (as LangGraph Server lists them)."""
        return [run for run in reversed(self._runs.values()) if run.thread_id == thread_id]

    def active(self, thread_id: str) -> list[RunRecord]:
        """The thread's runs that are waiting their turn or running."""
        return [run for run in self.of_thread(thread_id) if run.active]

    def latest_status(self, thread_id: str) -> RunStatus | None:
        """The status of the thread's newest run (None: no run of it is recorded here)."""
        return next((run.status for run in self.of_thread(thread_id)), None)

    def forget_thread(self, thread_id: str) -> None:
        """Drop a deleted thread's runs, as LangGraph Server deletes them with the thread."""
        for run in self.of_thread(thread_id):
            del self._runs[run.run_id]
