"""The agent's tools, and the kit for writing more (``ToolSpec``, ``progress``); no tool reads settings."""
