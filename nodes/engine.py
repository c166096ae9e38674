"""The tool engine: the wrappers every tool call goes through, composed in this one place.

    async with open_tool_store(settings.cache_url) as store:
        graph = build_graph(settings=settings, tool_store=store)   # uses engine_wrappers

Outer first:

- ``RecordedResults`` (``nodes.recorded_results``) answers a call whose result is already
  recorded (a resumed run) and records each finished result before handing it back;
- ``record_outcomes`` (``nodes.tool_stats``) counts every call, cache hits included;
- ``ResultCache`` (``nodes.result_cache``) answers repeated calls of cacheable tools;
- ``GroupLimits`` (``nodes.concurrency``) holds a call until its concurrency group has room;
- ``Lifecycle`` (``nodes.tool_calls``) reports the call's events, with the ETA from
  ``nodes.eta`` in ``tool_start``;
- ``enforce_timeout`` (``nodes.timeouts``) stops a call past its ``timeout_s``.

The group limit sits between the cache and ``Lifecycle``: a cache hit does not wait for a
slot, and ``tool_start`` means the tool really started.
"""

from __future__ import annotations

from graph.settings import Settings
from graph.tool_store import ToolStore
from nodes import concurrency
from nodes.eta import expected_duration
from nodes.recorded_results import RecordedResults
from nodes.result_cache import ResultCache
from nodes.timeouts import enforce_timeout
from nodes.tool_calls import Lifecycle, ToolCallWrapper
from nodes.tool_stats import record_outcomes


def engine_wrappers(settings: Settings, store: ToolStore) -> list[ToolCallWrapper]:
    return [
        RecordedResults(store),
        record_outcomes(store),
        ResultCache(store, settings.cache_ttl_s),
        *concurrency.default_wrappers(settings),
        Lifecycle(expected_s=expected_duration(store)),
        enforce_timeout(settings.tool_timeout_s),
    ]
