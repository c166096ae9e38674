"""A checkpoint that a run loads more than once is deserialized once.

A run reads its thread's newest checkpoint up to three times before its first step: the
service's check for calls waiting for approval, the settling of an unfinished step
(``agent_ng.graph.settle``) and LangGraph's own load. Each one deserializes the whole history
into new message objects: on SQLite 1–2 ms of CPU at 100 messages, 4 at 400, 27 at 1,000.

``MemoSerializer`` is LangGraph's serializer keeping, for a few seconds, what it deserialized
from a large blob. The same bytes loaded again come back in new containers (every dict, list
and set copied) around the same leaves (the messages), so a caller that changes its
checkpoint (LangGraph's loop updates its versions in place) changes no other caller's.
Messages are not copied: LangGraph's reducers replace a stored message by id, never change it
in place, and neither does this project. Nothing is kept longer than ``keep_s`` or past
``max_bytes`` of blobs, the oldest going first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from time import monotonic
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

KEEP_S = 2.0
"""Long enough for one run's loads, which follow each other within its start."""
MAX_BYTES = 32 << 20
MIN_BYTES = 8 << 10
"""Smaller blobs deserialize in about the time a lookup takes."""


def fresh(value: Any) -> Any:
    """``value`` with every dict, list and set in it copied; everything else shared."""
    kind = type(value)
    if kind is dict:
        return {k: fresh(v) for k, v in value.items()}
    if kind is list:
        return [fresh(v) if type(v) in (dict, list, set) else v for v in value]
    if kind is set:
        return set(value)
    return value


class MemoSerializer(JsonPlusSerializer):
    """``JsonPlusSerializer`` whose ``loads_typed`` answers a blob it loaded lately from memory."""

    def __init__(self, *args: Any, keep_s: float = KEEP_S, max_bytes: int = MAX_BYTES,
                 min_bytes: int = MIN_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_s, self.max_bytes, self.min_bytes = keep_s, max_bytes, min_bytes
        self._fresh_memo()

    def _fresh_memo(self) -> None:
        self._loaded: OrderedDict[tuple[str, bytes], tuple[float, Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        kind, blob = data
        if len(blob) < self.min_bytes:
            return super().loads_typed(data)
        key = (kind, bytes(blob))
        with self._lock:
            now = monotonic()
            self._forget(now)
            kept = self._loaded.get(key)
        if kept is None:
            value = super().loads_typed(data)
            with self._lock:
                if key not in self._loaded:
                    self._loaded[key] = (now, value)
                    self._bytes += len(blob)
            kept = (now, value)
        return fresh(kept[1])

    def _forget(self, now: float) -> None:
        while self._loaded:
            (_, blob), (at, _) = next(iter(self._loaded.items()))
            if at + self.keep_s > now and self._bytes <= self.max_bytes:
                return
            self._loaded.popitem(last=False)
            self._bytes -= len(blob)

    def with_msgpack_allowlist(self, extra_allowlist: Iterable[tuple[str, ...] | type]) -> JsonPlusSerializer:
        """A clone that loads under another allowlist keeps what it loads apart."""
        clone = super().with_msgpack_allowlist(extra_allowlist)
        if clone is not self:
            clone._fresh_memo()
        return clone
