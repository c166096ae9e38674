"""Fake chat models for the benchmarks: no network, as fast as the interface allows.

``TokenModel`` streams ``tokens`` chunks with no pause (the cost measured is everything around
the model); ``first_delay_s`` makes the first chunk wait, simulating a model's latency, and
``interval_s`` paces the rest, a model's generation speed (the only sleeps are here, in bench/). ``ToolTurnModel`` asks for ``calls`` tool calls in its first turn
and answers once the results are in, the shape of one parallel-tools turn. Both accept
``bind_tools`` so our graph and langchain's ``create_agent`` drive the same model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

USAGE = {"input_tokens": 10, "output_tokens": 1, "total_tokens": 11}


class _AsyncOnly(BaseChatModel):
    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        return self

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError("benchmark models are async only")


class TokenModel(_AsyncOnly):
    """Streams ``tokens`` one-word chunks, the first after ``first_delay_s``."""

    tokens: int = 1000
    first_delay_s: float = 0.0
    interval_s: float = 0.0
    """Pause between chunks: a model producing 1 / interval_s tokens per second."""

    @property
    def _llm_type(self) -> str:
        return "bench-tokens"

    async def _astream(
        self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.first_delay_s:
            await asyncio.sleep(self.first_delay_s)
        for n in range(self.tokens):
            if self.interval_s and n:
                await asyncio.sleep(self.interval_s)
            yield ChatGenerationChunk(message=AIMessageChunk(content="tok "))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", chunk_position="last", usage_metadata=USAGE)
        )


class ToolTurnModel(_AsyncOnly):
    """First turn: ``calls`` calls of ``tool`` (argument ``i``); once results are in: ``done``."""

    tool: str = "work"
    calls: int = 1
    answer_words: int = 1

    @property
    def _llm_type(self) -> str:
        return "bench-tool-turn"

    async def _astream(
        self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        if not isinstance(messages[-1], ToolMessage):
            turn = len([m for m in messages if isinstance(m, HumanMessage)])
            chunks = [
                {"name": self.tool, "args": f'{{"i": {i}}}', "id": f"call_{turn}_{i}", "index": i}
                for i in range(self.calls)
            ]
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=chunks))
        else:
            for _ in range(self.answer_words):
                yield ChatGenerationChunk(message=AIMessageChunk(content="done "))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", chunk_position="last", usage_metadata=USAGE)
        )
