"""``agent-ng tools`` in a fresh process: built-in and MCP tools with their source and settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import MCP_SERVER, REPO

ROOT = REPO
SERVER = MCP_SERVER


def agent_ng(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENT_"))}
    env |= {"AGENT_DATA_DIR": str(tmp_path), "AGENT_MCP_CONFIG": str(path), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "agent_ng.cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def agent_ng_tools(tmp_path: Path, config: dict) -> subprocess.CompletedProcess[str]:
    return agent_ng(tmp_path, config, "tools")


def row(out: str, tool: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(f"│ {tool} "))
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_lists_each_tool_with_its_source_and_settings_and_the_servers_that_failed(tmp_path):
    done = agent_ng_tools(
        tmp_path,
        {"mcpServers": {
            "t": {"command": sys.executable, "args": [SERVER],
                  "defaults": {"timeout_s": 20, "concurrency_group": "net"},
                  "tools": {"echo": {"cacheable": True, "cache_ttl_s": 60}, "exit_now": {"requires_approval": True}}},
            "broken": {"command": str(tmp_path / "missing-server")},
        }},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert row(out, "calculator") == ["calculator", "built-in", "10 s", "yes", "-", "-", "-"]
    assert row(out, "http_fetch") == ["http_fetch", "built-in", "25 s", "no", "network", "-", "-"]
    assert row(out, "echo") == ["echo", "mcp:t", "20 s", "yes, 60 s", "net", "-", "-"]
    assert row(out, "exit_now") == ["exit_now", "mcp:t", "20 s", "no", "net", "required", "-"]
    assert "mcp:broken: did not start: FileNotFoundError" in out


@pytest.mark.parametrize("command", [("tools",), ("ask", "hi"), ("serve", "--port", "0")])
def test_an_unusable_config_is_a_clear_error_before_anything_starts(tmp_path, command):
    done = agent_ng(tmp_path, {"mcpServers": {"x": {"command": "a", "defaults": {"timeout": 3}}}}, *command)
    assert done.returncode == 2
    assert "unknown setting(s) ['timeout']" in done.stderr
    assert "Traceback" not in done.stderr
    assert "serving on" not in done.stderr
    assert not list(tmp_path.glob("*.db")), "nothing was opened or written"
