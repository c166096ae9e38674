"""The chat model ``AGENT_MODEL`` names: any LangChain chat model as ``provider:model``; OpenAI by default, the offline rule-based model without its key or base URL."""
