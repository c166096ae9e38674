"""The tracing pieces that need no collector: what a tool span records, and that tracing off
installs nothing (checked in a fresh process, since instrumenting LangChain is process-wide).

(LangSmith, which langchain-core imports, loads ``opentelemetry.sdk`` by itself when it is
installed; that is not tracing being on.)"""

from __future__ import annotations

import subprocess
import sys

from langchain_core.messages import ToolMessage
from langgraph.types import Command

from agent_ng.engine.tool_calls import NOTES_KEY
from agent_ng.engine.tool_tracing import outcome_attributes, start_attributes
from tests.helpers.paths import REPO

ROOT = REPO


def message(status: str = "success", **notes) -> ToolMessage:
    return ToolMessage("out", tool_call_id="c1", name="t", status=status, response_metadata={NOTES_KEY: notes})


def test_a_tool_span_starts_with_the_call_id_name_and_arguments():
    attributes = start_attributes({"name": "t", "id": "c1", "args": {"x": 1}})
    assert attributes["tool_call.id"] == "c1"
    assert attributes["tool.name"] == "t"
    assert attributes["openinference.span.kind"] == "TOOL"
    assert attributes["input.value"] == '{"x": 1}'


def test_a_tool_span_says_whether_the_call_was_cached_timed_out_or_rejected():
    plain = outcome_attributes(message())
    assert plain["agent_ng.tool.status"] == "success" and plain["output.value"] == "out"
    assert not any(plain[f"agent_ng.tool.{k}"] for k in ("cached", "timed_out", "rejected"))
    assert outcome_attributes(message(cached=True))["agent_ng.tool.cached"] is True
    timed_out = outcome_attributes(message("error", timed_out=True))
    assert timed_out["agent_ng.tool.timed_out"] is True and timed_out["agent_ng.tool.status"] == "error"
    assert outcome_attributes(message("error", rejected=True))["agent_ng.tool.rejected"] is True
    assert outcome_attributes(Command(update={})) == {"agent_ng.tool.status": "command"}


OFF = """
import asyncio
from langchain_core.callbacks import BaseCallbackManager
from langgraph.checkpoint.memory import InMemorySaver
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.settings import Settings
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

init = BaseCallbackManager.__init__
model = ScriptedModel(replies=[calls(("calculator", {"expression": "2+2"})), Reply(text="4")])
graph = build_graph(model, checkpointer=InMemorySaver(), settings=Settings(checkpoint_url="memory://", tracing="off"))
async def run():
    return [e.type async for e in stream(graph, {"messages": [("user", "2+2")]}, {"configurable": {"thread_id": "t"}})]
types = asyncio.run(run())
import sys
assert "tool_complete" in types, types
loaded = sorted(m for m in sys.modules if m.startswith(("openinference", "opentelemetry.exporter", "agent_ng.engine.tool_tracing")))
assert not loaded, loaded
assert BaseCallbackManager.__init__ is init
print("nothing installed")
"""


def test_tracing_off_imports_and_installs_nothing():
    done = subprocess.run([sys.executable, "-c", OFF], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nothing installed" in done.stdout
