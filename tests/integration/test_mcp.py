"""MCP tools through the graph, against a real FastMCP server (tests/mcp_server.py) over stdio
and over streamable HTTP on a free loopback port.

Overlap is proven by the server itself: its ``gather`` calls return only once all of a group
are inside the server at once, so the test would hang (and hit ``asyncio.timeout``) if the two
calls ran one after the other.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import AgentEvent, stream
from agent_ng.graph.toolset import builtin_tools, load_tools
from agent_ng.settings import Settings
from agent_ng.tools.mcp_servers import McpConfigError, fraction, open_mcp_servers, read_config
from agent_ng.tools.registry import source_of, spec_of
from tests.helpers.paths import MCP_SERVER
from tests.helpers.ports import free_port
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 20
SERVER = MCP_SERVER


@contextmanager
def http_server() -> Iterator[str]:
    """The test server over streamable HTTP in its own process; yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, SERVER, "--http", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):
            try:
                httpx.get(url, timeout=0.5)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise RuntimeError("the test MCP server exited") from None
                time.sleep(0.05)  # waiting for the server process to listen
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def http_server_url() -> Iterator[str]:
    with http_server() as url:
        yield url


@pytest.fixture(params=["stdio", "http"])
def server_entry(request) -> dict:
    if request.param == "stdio":
        return {"command": sys.executable, "args": [SERVER]}
    return {"url": request.getfixturevalue("http_server_url")}


def write_config(tmp_path: Path, servers: dict) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def settings(**overrides) -> Settings:
    return Settings(checkpoint_url="memory://", system_prompt="", **overrides)


def of_type(events: list[AgentEvent], type_: str) -> list[AgentEvent]:
    return [e for e in events if e.type == type_]


async def run(tools, replies: list[Reply]) -> tuple[list[AgentEvent], ScriptedModel]:
    model = ScriptedModel(replies=replies)
    graph = build_graph(model, tools=tools, checkpointer=InMemorySaver(), settings=settings())
    config = {"configurable": {"thread_id": "t"}}
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage("go")]}, config)]
    return events, model


async def test_two_calls_of_one_mcp_tool_stream_their_own_progress_and_finish(tmp_path, server_entry):
    path = write_config(tmp_path, {"t": {**server_entry, "defaults": {"timeout_s": 9, "concurrency_group": "mcp"}}})
    group = f"g-{id(server_entry)}"
    async with open_mcp_servers(path) as servers:
        assert servers.failures == {}
        events, model = await run(
            servers.tools,
            [
                calls(
                    ("gather", {"label": "A", "group": group, "parties": 2}),
                    ("gather", {"label": "B", "group": group, "parties": 2}),
                ),
                Reply(text="both done"),
            ],
        )

    ids = dict(zip(["A", "B"], model.replies[0].ids, strict=True))
    progress = of_type(events, "tool_progress")
    for label, call_id in ids.items():
        mine = [e for e in progress if e.tool_call_id == call_id]
        assert [e.message for e in mine] == [f"{label} arrived", f"{label} done"]
        assert [e.progress for e in mine] == [0.5, 1.0]
        assert all(e.name == "gather" for e in mine)
    order = [(e.type, e.tool_call_id) for e in events if e.type in ("tool_progress", "tool_complete")]
    arrivals = [order.index(("tool_progress", i)) for i in ids.values()]
    completions = [order.index(("tool_complete", i)) for i in ids.values()]
    assert max(arrivals) < min(completions), "both calls were inside the server before either finished"
    results = {e.tool_call_id: e.content for e in of_type(events, "tool_result")}
    assert results == {ids["A"]: "A done", ids["B"]: "B done"}
    assert events[-1].status == "done"


async def test_an_mcp_error_result_is_a_tool_error_and_its_sibling_finishes(tmp_path, server_entry):
    path = write_config(tmp_path, {"t": server_entry})
    async with open_mcp_servers(path) as servers:
        events, model = await run(
            servers.tools,
            [calls(("fail", {"reason": "bad input"}), ("echo", {"text": "fine"})), Reply(text="ok")],
        )
    fail_id, echo_id = model.replies[0].ids
    errors = of_type(events, "tool_error")
    assert [e.tool_call_id for e in errors] == [fail_id]
    assert "failed on purpose: bad input" in errors[0].error
    assert [e.tool_call_id for e in of_type(events, "tool_complete")] == [echo_id]
    tool_messages = model.seen[1][-2:]
    assert {m.tool_call_id: m.status for m in tool_messages} == {fail_id: "error", echo_id: "success"}


async def test_a_server_that_cannot_start_is_reported_and_the_builtin_tools_still_work(tmp_path, caplog):
    path = write_config(
        tmp_path,
        {"broken": {"command": str(tmp_path / "no-such-server")}, "t": {"command": sys.executable, "args": [SERVER]}},
    )
    async with load_tools(settings(mcp_config=path)) as tools:
        names = {t.name for t in tools}
        events, model = await run(tools, [calls(("calculator", {"expression": "6*7"})), Reply(text="42")])
    assert {"calculator", "count_primes", "echo", "gather"} <= names
    assert "did not start: FileNotFoundError" in caplog.text and "'broken'" in caplog.text
    assert [e.content for e in of_type(events, "tool_result")] == ["42"]
    assert events[-1].status == "done"


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_server_that_dies_mid_call_gives_its_tools_a_clear_error(tmp_path, transport):
    with ExitStack() as stack:
        if transport == "stdio":
            entry = {"command": sys.executable, "args": [SERVER]}
        else:
            entry = {"url": stack.enter_context(http_server())}
        path = write_config(tmp_path, {"t": entry})
        events, model = await run_until_the_server_dies(path)
    exit_id, calc_id = model.replies[0].ids
    (echo_id,) = model.replies[1].ids
    errors = {e.tool_call_id: e.error for e in of_type(events, "tool_error")}
    assert set(errors) == {exit_id, echo_id}
    assert "MCP server 't' stopped" in errors[exit_id]
    assert "MCP server 't' is not available" in errors[echo_id]
    assert [e.tool_call_id for e in of_type(events, "tool_complete")] == [calc_id]


async def run_until_the_server_dies(path: Path) -> tuple[list[AgentEvent], ScriptedModel]:
    async with open_mcp_servers(path) as servers:
        tools = [*builtin_tools(), *servers.tools]
        events, model = await run(
            tools,
            [calls(("exit_now", {}), ("calculator", {"expression": "1+1"})), calls(("echo", {"text": "again"})), Reply(text="ok")],
        )
    return events, model


async def test_mcp_tools_carry_their_source_and_the_specs_from_the_file(tmp_path):
    path = write_config(
        tmp_path,
        {"t": {"command": sys.executable, "args": [SERVER], "defaults": {"timeout_s": 7, "cacheable": True},
               "tools": {"fail": {"requires_approval": True, "cacheable": False}}}},
    )
    async with load_tools(settings(mcp_config=path)) as tools:
        by_name = {t.name: t for t in tools}
    assert source_of(by_name["echo"]) == "mcp:t" and source_of(by_name["calculator"]) == "built-in"
    assert spec_of(by_name["echo"]).timeout_s == 7 and spec_of(by_name["echo"]).cacheable
    fail = spec_of(by_name["fail"])
    assert fail.requires_approval and not fail.cacheable and fail.timeout_s == 7


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"x": {"args": ["a"]}}, "either 'command'"),
        ({"x": {"command": "a", "url": "http://b"}}, "either 'command'"),
        ({"x": {"command": "a", "defaults": {"timeout": 3}}}, "unknown setting(s) ['timeout']"),
        ({"x": {"command": "a", "tools": {"t": {"retries": 3}}}}, "tools.t: unknown setting(s)"),
        ({"x": {"command": "a", "tools": {"t": {"timeout_s": "soon"}}}}, "tools.t: timeout_s: Input should be a valid number"),
        ({"x": {"command": "a", "startup_timeout_s": 0}}, "startup_timeout_s"),
    ],
)
def test_a_bad_config_is_refused_with_what_is_wrong(tmp_path, servers, message):
    with pytest.raises(McpConfigError, match="is not usable") as info:
        read_config(write_config(tmp_path, servers))
    assert message in str(info.value)


def test_a_config_that_is_not_json_or_missing_says_so(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{mcpServers")
    with pytest.raises(McpConfigError, match="not valid JSON"):
        read_config(bad)
    with pytest.raises(McpConfigError, match="cannot read"):
        read_config(tmp_path / "missing.json")


def test_mcp_progress_counts_become_fractions():
    assert fraction(1, 4) == 0.25
    assert fraction(5, None) is None
    assert fraction(7, 5) == 1.0


async def test_tools_of_the_same_name_are_refused_and_a_prefix_tells_them_apart(tmp_path):
    entry = {"command": sys.executable, "args": [SERVER]}
    clash = write_config(tmp_path, {"a": entry, "b": entry})
    with pytest.raises(ValueError, match=r"same name: \{'gather': \['mcp:a', 'mcp:b'\]"):
        async with load_tools(settings(mcp_config=clash)):
            pass
    prefixed = write_config(
        tmp_path, {"a": entry, "b": {**entry, "prefix": True, "tools": {"echo": {"timeout_s": 3}}}}
    )
    async with load_tools(settings(mcp_config=prefixed)) as tools:
        by_name = {t.name: t for t in tools}
        reply = await by_name["b_echo"].ainvoke({"text": "via b"})
    assert reply[0]["text"] == "via b", "a prefixed tool calls the server's own tool name"
    assert {"gather", "b_gather", "echo", "b_echo"} <= set(by_name)
    assert spec_of(by_name["b_echo"]).timeout_s == 3 and spec_of(by_name["echo"]).timeout_s is None


async def test_a_server_that_never_answers_is_given_up_after_the_startup_timeout(tmp_path):
    silent = {"command": sys.executable, "args": ["-c", "import sys; sys.stdin.read()"], "startup_timeout_s": 0.5}
    path = write_config(tmp_path, {"silent": silent, "t": {"command": sys.executable, "args": [SERVER]}})
    async with asyncio.timeout(GUARD_S):
        async with open_mcp_servers(path) as servers:
            assert servers.failures == {"silent": "did not answer within 0.5 s"}
            assert "echo" in {t.name for t in servers.tools}
