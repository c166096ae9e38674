"""The agent's state: the conversation, appended to by the model and by each tool call.

``summary`` / ``summary_through`` (``agent_ng.nodes.memory``, only when summarising is on): the summary of
the messages the token budget no longer sends, and the id of the last message it covers.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


class AgentState(TypedDict):
    """The graph's state: the conversation, and its summary when memory summarises."""

    messages: Annotated[list[AnyMessage], add_messages]
    summary: NotRequired[str]
    summary_through: NotRequired[str]
