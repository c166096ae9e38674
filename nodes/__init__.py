"""The graph's nodes: the model call (with its memory and the history rule) and the state they share.

The tool node is the tool engine's (``agent_ng.engine``). The node names are stated here once.
"""

LLM = "llm"
"""The model node."""
TOOLS = "tools"
"""The tool node: one task per tool call."""
