"""A chat model for tests that plays a script: each call streams the next scripted reply.

Text streams as word chunks; tool calls stream as ``tool_call_chunks`` like OpenAI's. A reply
may pause after ``hold_after`` chunks until the test sets ``release``, so tests can observe what
arrived while the model was still producing.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr


@dataclass
class Reply:
    text: str = ""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()
    raw_tool_calls: Sequence[tuple[str, str]] = ()
    """(name, argument string) pairs sent as is, e.g. malformed JSON."""
    hold_after: int | None = None
    release: asyncio.Event | None = None
    ids: list[str] = field(default_factory=list)


def calls(*names_and_args: tuple[str, dict[str, Any]]) -> Reply:
    return Reply(tool_calls=names_and_args)


class ScriptedModel(BaseChatModel):
    replies: list[Reply]
    _seen: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _finished: list[bool] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def seen(self) -> list[list[BaseMessage]]:
        """The messages each call received."""
        return self._seen

    @property
    def finished(self) -> list[bool]:
        """One flag per call, set once the call has streamed its last chunk."""
        return self._finished

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        return self

    def _next(self, messages: list[BaseMessage]) -> Reply:
        if len(self._seen) >= len(self.replies):
            raise AssertionError(f"the script has {len(self.replies)} replies; call {len(self._seen) + 1} has none")
        self._seen.append(list(messages))
        self._finished.append(False)
        return self.replies[len(self._seen) - 1]

    def _chunks(self, reply: Reply) -> Iterator[AIMessageChunk]:
        for word in re.findall(r"\S+\s*", reply.text):
            yield AIMessageChunk(content=word)
        pairs = [(n, json.dumps(a)) for n, a in reply.tool_calls] + list(reply.raw_tool_calls)
        for index, (name, args) in enumerate(pairs):
            call_id = f"call_{uuid.uuid4().hex[:12]}"
            reply.ids.append(call_id)
            half = len(args) // 2
            yield AIMessageChunk(
                content="",
                tool_call_chunks=[{"name": name, "args": args[:half], "id": call_id, "index": index}],
            )
            yield AIMessageChunk(
                content="",
                tool_call_chunks=[{"name": None, "args": args[half:], "id": None, "index": index}],
            )
        yield AIMessageChunk(
            content="",
            chunk_position="last",
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reply = self._next(messages)
        for n, message in enumerate(self._chunks(reply)):
            if reply.hold_after is not None and n == reply.hold_after and reply.release:
                await reply.release.wait()
            chunk = ChatGenerationChunk(message=message)
            if run_manager:
                await run_manager.on_llm_new_token(message.text, chunk=chunk)
            yield chunk
        self._finished[-1] = True

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _stream(self, messages, stop=None, run_manager: CallbackManagerForLLMRun | None = None, **kwargs):
        raise NotImplementedError("the scripted model is async only")

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError("the scripted model is async only")

