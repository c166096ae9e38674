"""agent-ng: a LangGraph agent that streams everything as it happens.

    from agent_ng import Settings, open_agent, stream

    async with open_agent(Settings()) as agent:
        async for event in stream(agent.graph, {"messages": [("user", "17*23?")]},
                                  {"configurable": {"thread_id": "t1"}}):
            print(event.type, event.to_dict())

These names are the public API; everything else is reachable under its subpackage but may
change. They are loaded on first use, so ``import agent_ng`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_ng.collector import tune_collector
    from agent_ng.graph.agent import build_graph, open_agent
    from agent_ng.graph.events import AgentEvent, stream
    from agent_ng.settings import Settings
    from agent_ng.tools import progress
    from agent_ng.tools.progress import Progress
    from agent_ng.tools.registry import ToolSpec, configure

_WHERE = {
    "build_graph": "agent_ng.graph.agent",
    "open_agent": "agent_ng.graph.agent",
    "stream": "agent_ng.graph.events",
    "AgentEvent": "agent_ng.contract",
    "Settings": "agent_ng.settings",
    "Progress": "agent_ng.tools.progress",
    "ToolSpec": "agent_ng.tools.registry",
    "configure": "agent_ng.tools.registry",
    "tune_collector": "agent_ng.collector",
}

__all__ = [
    "AgentEvent",
    "Progress",
    "Settings",
    "ToolSpec",
    "build_graph",
    "configure",
    "open_agent",
    "progress",
    "stream",
    "tune_collector",
]


def __getattr__(name: str) -> Any:
    """Load a public name on first use."""
    if name == "progress":
        value: Any = import_module("agent_ng.tools.progress")
    elif name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'agent_ng' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
