"""Where the tests find the repository and the helper programs they start."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MCP_SERVER = str(Path(__file__).with_name("mcp_server.py"))
