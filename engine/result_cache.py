"""Result cache: a repeated call of a cacheable tool is answered from the store.

    ResultCache(store, default_ttl_s=settings.cache_ttl_s)

A tool opts in with ``configure(tool, cacheable=True, cache_ttl_s=...)``: it must be a pure
function of its arguments. The key is the tool's name and its arguments as canonical JSON
(sorted keys), hashed; a hit within the TTL returns the stored content without running the
tool, reported as its own ``tool_start`` / ``tool_result`` / ``tool_complete`` with
``cached: true``. Only successful plain results are stored: errors, timeouts, ``Command``s
and results with an artifact never are. The cache sits outside ``Lifecycle`` (and outside any
concurrency limit), so a hit neither waits for a slot nor counts as a run.

Identical cacheable calls in flight at once run once (single flight, in this process): the
first runs the tool, the others wait for its result and report it as cached. If the first
does not give a storable result (an error, a timeout, a cancel), each of the others runs the
tool itself.

If the store fails, the call runs uncached and the failure is logged: a cache outage costs
speed, never an answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from agent_ng.engine.store import ToolStore
from agent_ng.engine.tool_calls import Execute, noted, notes, report_cached
from agent_ng.tools.registry import spec_of

log = logging.getLogger(__name__)


def cache_key(name: str, args: dict[str, Any]) -> str | None:
    """Same tool + same arguments (in any key order) = same key; None if not JSON."""
    try:
        canonical = json.dumps([name, args], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(canonical.encode()).hexdigest()


def storable(result: ToolMessage | Command) -> bool:
    """Whether the result may answer later calls: a plain success the tool finished in time."""
    return (
        isinstance(result, ToolMessage)
        and result.status == "success"
        and result.artifact is None
        and not notes(result).get("timed_out")
    )


@dataclass(frozen=True, slots=True)
class ResultCache:
    """The wrapper: answer a cacheable call from the store, or run it once for all its twins."""

    store: ToolStore
    default_ttl_s: float
    clock: Callable[[], float] = field(default=time.time)
    """Wall-clock seconds; tests pass their own to move time without waiting."""
    _flights: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    """Key -> the content its running call will store (``None`` if it stores none)."""

    async def __call__(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        spec = spec_of(request.tool)
        call = request.tool_call
        key = cache_key(call["name"], call["args"]) if spec.cacheable else None
        if key is None:
            return await execute(request)
        try:
            hit = await self.store.cached(key, self.clock())
        except Exception:
            log.warning(
                "tool cache lookup failed; running %s uncached", call["name"], exc_info=True
            )
            return await execute(request)
        if hit is not None:
            return answered(request, hit.content)
        if (flight := self._flights.get(key)) is not None:
            content = await asyncio.shield(flight)
            return answered(request, content) if content is not None else await execute(request)
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        content = None
        try:
            result = await execute(request)
            if storable(result):
                content = result.content
                await self._store(key, content, spec.cache_ttl_s or self.default_ttl_s, call["name"])
            return result
        finally:
            del self._flights[key]
            flight.set_result(content)

    async def _store(self, key: str, content: Any, ttl_s: float, name: str) -> None:
        try:
            await self.store.cache(key, content, self.clock(), ttl_s)
        except Exception:
            log.warning("storing %s's result in the tool cache failed", name, exc_info=True)


def answered(request: ToolCallRequest, content: Any) -> ToolMessage:
    """The call's result without running it (a hit, or a twin call's), reported as cached."""
    call = request.tool_call
    message = noted(ToolMessage(content=content, name=call["name"], tool_call_id=call["id"]), cached=True)
    report_cached(request, message)
    return message
