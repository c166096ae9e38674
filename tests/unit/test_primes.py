import threading
from typing import Any

import pytest

from agent_ng.contract import EVENT_KEY
from agent_ng.tools import primes, progress
from agent_ng.tools.primes import MAX_BELOW, count_primes


def _is_prime_by_trial_division(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


@pytest.mark.parametrize(
    ("below", "expected"),
    [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 1),
        (4, 2),
        (10, 4),
        (100, 25),
        (200_000, 17_984),
        (10**6, 78_498),
    ],
)
def test_known_counts(below: int, expected: int) -> None:
    assert count_primes.invoke({"below": below}) == expected


def test_matches_trial_division_below_2000() -> None:
    trial_primes = [n for n in range(2000) if _is_prime_by_trial_division(n)]
    for below in range(2000):
        expected = sum(p < below for p in trial_primes)
        assert count_primes.invoke({"below": below}) == expected, below


@pytest.mark.parametrize("segment_odds", [1, 3, 64, 1000])
def test_segment_boundaries_are_exact(monkeypatch: pytest.MonkeyPatch, segment_odds: int) -> None:
    monkeypatch.setattr(primes, "SEGMENT_ODDS", segment_odds)
    assert count_primes.invoke({"below": 2000}) == 303
    assert count_primes.invoke({"below": 20_000}) == 2262


def test_large_bound() -> None:
    assert count_primes.invoke({"below": 10**7}) == 664_579


def _check_reports(records: list[dict[str, Any]], below: int) -> None:
    fractions = [r["progress"] for r in records]
    assert 5 <= len(records) <= 60
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert {r["tool_call_id"] for r in records} == {"call_1"}
    assert {r[EVENT_KEY] for r in records} == {"tool_progress"}
    assert records[-1]["message"] == f"sieved {below:,} of {below:,}"


@pytest.mark.parametrize("below", [1000, 200_000, 10**6 + 7])
def test_reports_progress(below: int) -> None:
    records: list[dict[str, Any]] = []
    with progress.tool_call_scope("call_1", "count_primes", records.append):
        count_primes.invoke({"below": below})
    _check_reports(records, below)


async def test_ainvoke_reports_progress_from_worker_thread() -> None:
    records: list[dict[str, Any]] = []
    threads: set[int] = set()

    def write(record: dict[str, Any]) -> None:
        threads.add(threading.get_ident())
        records.append(record)

    with progress.tool_call_scope("call_1", "count_primes", write):
        assert await count_primes.ainvoke({"below": 200_000}) == 17_984
    _check_reports(records, 200_000)
    assert threads and threading.get_ident() not in threads


def test_runs_outside_a_tool_call() -> None:
    assert progress.current() is None
    assert count_primes.invoke({"below": 1000}) == 168


@pytest.mark.parametrize("below", [-1, MAX_BELOW + 1, 10**12])
def test_out_of_range_is_refused(below: int) -> None:
    with pytest.raises(ValueError, match="below must be between 0 and 2,000,000,000"):
        count_primes.invoke({"below": below})


@pytest.mark.parametrize("below", ["many", 2.5, None])
def test_non_integer_is_refused(below: object) -> None:
    with pytest.raises(ValueError, match="below"):
        count_primes.invoke({"below": below})


def test_direct_call_type_check() -> None:
    with pytest.raises(ValueError, match="below must be an integer, got str"):
        count_primes.func("10")
