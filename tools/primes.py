"""Count primes: a real CPU-bound tool that takes seconds and says how far it is.

``count_primes`` is exact (a sieve, not an estimate) and large inputs take long enough to
show why tools report progress: it calls ``progress.report`` after each chunk, about 20
times a run whatever the size, so the user sees it move and gets an ETA. It is a sync
function because the work is CPU-bound; LangChain runs sync tools in a worker thread, so
the event loop keeps streaming other output meanwhile.

The sieve is segmented and keeps odd numbers only, so memory stays at one small segment
however large the bound; bytearray slice assignment does the crossing out in C.
"""

from __future__ import annotations

import math

from langchain_core.tools import tool

from agent_ng.tools import progress

MAX_BELOW = 2_000_000_000
REPORTS = 20
"""Progress reports a run aims for; each chunk of about ``below / REPORTS`` numbers ends in one."""
SEGMENT_ODDS = 1 << 20
"""Odd numbers sieved at a time (1 MiB): the fastest of 64 KiB to 4 MiB when measured."""


@tool
def count_primes(below: int) -> int:
    """Count the prime numbers smaller than `below` (0 <= below <= 2,000,000,000), exactly.

    Example: below=100 gives 25. Fast up to a few hundred million; the maximum takes
    several seconds, with progress reported while it runs.
    """
    if isinstance(below, bool) or not isinstance(below, int):
        raise ValueError(f"below must be an integer, got {type(below).__name__}")
    if not 0 <= below <= MAX_BELOW:
        raise ValueError(f"below must be between 0 and {MAX_BELOW:,}, got {below:,}")
    if below <= 2:
        return 0
    base_primes = _odd_primes_up_to(math.isqrt(below - 1))
    chunk = _even_ceil(below / REPORTS)
    count = 1  # the prime 2; the sieve below only covers odd numbers
    for chunk_start in range(3, below, chunk):
        chunk_stop = min(chunk_start + chunk, below)
        for start in range(chunk_start, chunk_stop, 2 * SEGMENT_ODDS):
            count += _count_segment(start, min(start + 2 * SEGMENT_ODDS, chunk_stop), base_primes)
        progress.report(chunk_stop / below, f"sieved {chunk_stop:,} of {below:,}")
    return count


def _odd_primes_up_to(limit: int) -> list[int]:
    """Odd primes <= limit, by a plain sieve over all numbers."""
    if limit < 3:
        return []
    is_prime = bytearray([1]) * (limit + 1)
    is_prime[:2] = b"\0\0"
    for p in range(2, math.isqrt(limit) + 1):
        if is_prime[p]:
            is_prime[p * p :: p] = bytes(len(range(p * p, limit + 1, p)))
    return [n for n in range(3, limit + 1, 2) if is_prime[n]]


def _count_segment(start: int, stop: int, base_primes: list[int]) -> int:
    """Primes among the odd numbers in [start, stop), start odd, given the odd primes
    up to sqrt(stop - 1). Index i stands for start + 2 * i."""
    size = (stop - start + 1) // 2
    is_prime = bytearray([1]) * size
    for p in base_primes:
        first = p * p
        if first >= stop:
            break
        if first < start:
            first = start + (-start) % p
            if first % 2 == 0:
                first += p
        index = (first - start) // 2
        is_prime[index::p] = bytes(len(range(index, size, p)))
    return is_prime.count(1)


def _even_ceil(x: float) -> int:
    """Smallest even integer >= x (at least 2), so chunks starting at an odd number do too."""
    n = max(2, math.ceil(x))
    return n + n % 2
