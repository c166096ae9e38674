"""What the MCP and tracing integrations cost: per MCP call, and per streamed token.

    python -m agent_ng.bench.integrations            # prints two small tables

1. One MCP call (the test server's ``echo`` over a kept stdio session, and over streamable
   HTTP) against the same function as a local tool, both through ``tool.ainvoke`` with a tool
   call, as ``ToolNode`` runs them. Median of many calls, in ms.
2. Per-token cost of our ``AgentEvent`` stream for an N-token answer with tracing off, then
   on (OpenInference + OTLP exporter to a local sink), then off again after uninstrumenting.
   Tracing off installs nothing, so "off" is the plain graph.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool

from agent_ng.bench.measure import free_port
from agent_ng.engine.tracing import start_tracing
from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.settings import Settings
from agent_ng.tools.mcp_servers import open_mcp_servers

SERVER = str(Path(__file__).resolve().parents[1] / "tests" / "mcp_server.py")
CALLS = 300
TOKENS = 5000
ROUNDS = 5


class TokenModel(BaseChatModel):
    """Streams ``tokens`` one-word chunks as fast as it can."""

    tokens: int

    @property
    def _llm_type(self) -> str:
        return "tokens"

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        for _ in range(self.tokens):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content="tok "))
            if run_manager:
                await run_manager.on_llm_new_token("tok ", chunk=chunk)
            yield chunk

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        return await agenerate_from_stream(self._astream(messages, stop, run_manager))

    def _generate(self, *args, **kwargs):
        raise NotImplementedError("async only")


@tool
def echo(text: str) -> str:
    """Return ``text``."""
    return text


async def per_call_ms(target, n: int = CALLS) -> float:
    times = []
    for i in range(n):
        call = {"type": "tool_call", "id": f"c{i}", "name": "echo", "args": {"text": "hi"}}
        start = time.perf_counter()
        await target.ainvoke(call)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


async def mcp_costs() -> list[tuple[str, float]]:
    port = free_port()
    http = subprocess.Popen([sys.executable, SERVER, "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "mcp.json"
            config.write_text(json.dumps({"mcpServers": {
                "stdio": {"command": sys.executable, "args": [SERVER]},
                "http": {"url": f"http://127.0.0.1:{port}/mcp"},
            }}))
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                await asyncio.sleep(0.1)  # waiting for the HTTP server process to listen
            async with open_mcp_servers(config) as servers:
                assert not servers.failures, servers.failures
                by_server = {s.name: next(t for t in s.tools if t.name == "echo") for s in servers.servers}
                await per_call_ms(echo, 20)
                rows = [("local tool", await per_call_ms(echo))]
                for name, mcp_echo in by_server.items():
                    await per_call_ms(mcp_echo, 20)
                    rows.append((f"MCP over {name}", await per_call_ms(mcp_echo)))
                return rows
    finally:
        http.terminate()
        http.wait(10)


async def per_token_us(tracing: str) -> float:
    runs = []
    for r in range(ROUNDS):
        model = TokenModel(tokens=TOKENS)
        graph = build_graph(model, tools=[], settings=Settings(checkpoint_url="memory://", system_prompt="", tracing=tracing))
        start = time.process_time()
        async for _ in stream(graph, {"messages": [("user", "go")]}, {"configurable": {"thread_id": f"t{r}"}}):
            pass
        runs.append(time.process_time() - start)
    return statistics.median(runs) / TOKENS * 1e6


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


async def tracing_costs() -> list[tuple[str, float]]:
    rows = [("tracing off", await per_token_us("off"))]
    assert "openinference" not in " ".join(sys.modules), "tracing off must import nothing"
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_port}"
    rows.append(("tracing on (OTLP)", await per_token_us("otlp")))
    start_tracing().force_flush()
    from openinference.instrumentation.langchain import LangChainInstrumentor

    LangChainInstrumentor().uninstrument()
    rows.append(("off again (uninstrumented)", await per_token_us("off")))
    sink.shutdown()
    return rows


def main() -> None:
    print(f"One echo call, median of {CALLS} (ms):")
    for name, ms in asyncio.run(mcp_costs()):
        print(f"  {name:<28} {ms:7.3f}")
    print(f"AgentEvent stream, {TOKENS:,}-token answer, CPU us per token, median of {ROUNDS}:")
    for name, us in asyncio.run(tracing_costs()):
        print(f"  {name:<28} {us:7.1f}")


if __name__ == "__main__":
    main()
