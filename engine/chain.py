"""The tool-call chain: every wrapper a tool call goes through, in order. Stated only here.

    async with open_tool_store(settings.cache_url) as store:
        graph = build_graph(settings=settings, tool_store=store)   # calls tool_call_chain

Outer first (``make_tool_node`` puts ``with_message_id`` of ``agent_ng.engine.tool_calls``
outside them all: each result gets its message id before LangGraph stores it):

- ``TraceToolCalls`` (``agent_ng.engine.tool_tracing``, only with ``AGENT_TRACING=otlp``): one
  span per call, so it sees every outcome, approvals and cache hits included;
- ``require_approval`` (``agent_ng.engine.approval``): a call that needs a person waits for one
  before it starts or counts against any limit;
- ``RecordedResults.answer`` (``agent_ng.engine.recorded_results``) answers a call whose result is
  already recorded (a resumed run);
- ``record_outcomes`` (``agent_ng.engine.tool_stats``) counts every call, cache hits included;
- ``ResultCache`` (``agent_ng.engine.result_cache``) answers repeated calls of cacheable tools;
- ``GroupLimits`` (``agent_ng.engine.concurrency``) holds a call until its concurrency group
  has room: after the cache, so a cache hit does not wait for a slot;
- ``Lifecycle`` (``agent_ng.engine.tool_calls``) reports the call's events, with the ETA from
  ``agent_ng.engine.eta`` in ``tool_start``: inside the limit, so ``tool_start`` means the
  tool really started;
- ``RecordedResults.record`` records each finished result: inside ``Lifecycle``, so a result is
  recorded before its ``tool_result`` is reported;
- ``bound_output`` (``agent_ng.engine.output_limit``) cuts the result to the tool's
  ``max_output_bytes``: inside every wrapper that reports, keeps, records or caches a result,
  so none of them (nor the checkpoint) ever holds more;
- ``enforce_timeout`` (``agent_ng.engine.timeouts``) stops a call past its ``timeout_s``.

The wrappers take values; only this module reads ``Settings``.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent_ng.engine.approval import require_approval
from agent_ng.engine.concurrency import GroupConfig, GroupLimits, shared_group_limits
from agent_ng.engine.eta import expected_duration
from agent_ng.engine.output_limit import bound_output
from agent_ng.engine.recorded_results import RecordedResults
from agent_ng.engine.result_cache import ResultCache
from agent_ng.engine.store import ToolStore
from agent_ng.engine.timeouts import enforce_timeout
from agent_ng.engine.tool_calls import Lifecycle, ToolCallWrapper
from agent_ng.engine.tool_stats import record_outcomes
from agent_ng.settings import Settings


def tool_call_chain(
    settings: Settings, store: ToolStore, engine: Sequence[ToolCallWrapper] | None = None
) -> list[ToolCallWrapper]:
    """The whole chain, outer first; ``engine`` replaces the part from ``RecordedResults`` in
    (tracing and approval stay), and gets a ``Lifecycle`` innermost unless it places one."""
    return [
        *tracing(settings),
        require_approval,
        *(engine_wrappers(settings, store) if engine is None else engine),
    ]


def engine_wrappers(settings: Settings, store: ToolStore) -> list[ToolCallWrapper]:
    """The chain from ``RecordedResults`` in, as settings make it: the part ``engine`` replaces."""
    limits, recorded = group_limits_of(settings), RecordedResults(store)
    return [
        recorded.answer,
        record_outcomes(store),
        ResultCache(store, settings.cache_ttl_s),
        *([limits] if limits else []),
        Lifecycle(expected_s=expected_duration(store)),
        recorded.record,
        bound_output(settings.tool_max_output_bytes),
        enforce_timeout(settings.tool_timeout_s),
    ]


def tracing(settings: Settings) -> list[ToolCallWrapper]:
    """The tracing wrapper when tracing is on (it is started then); nothing is imported when off."""
    if settings.tracing == "off":
        return []
    from agent_ng.engine.tool_tracing import TraceToolCalls
    from agent_ng.engine.tracing import start_tracing

    return [TraceToolCalls(start_tracing())]


def group_config(settings: Settings) -> GroupConfig:
    """The settings' group limits as a hashable value, so equal settings share one ``GroupLimits``."""
    return GroupConfig(
        tuple(sorted(settings.group_limits.items())),
        settings.adaptive_concurrency,
        settings.adaptive_floor,
        settings.adaptive_ceiling,
    )


def group_limits_of(settings: Settings) -> GroupLimits | None:
    """The process's ``GroupLimits`` for ``settings``; ``None`` when no group has a limit."""
    if not settings.group_limits:
        return None
    return shared_group_limits(group_config(settings))
