"""The agent graph: built from a model and tools, streamed as ``AgentEvent``s."""
