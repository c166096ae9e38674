"""Output limit: what a tool call puts in the thread is at most so many bytes, cut with a note.

    bound_output(settings.tool_max_output_bytes)     # per tool: ToolSpec.max_output_bytes

A result enters the model's context and every later checkpoint of the thread, so a tool that
returns 100 MB once costs 100 MB per checkpoint for the rest of the thread. This wrapper cuts
every tool's ``ToolMessage`` (built-in, user or MCP) to its limit in UTF-8 bytes, note included:
text is cut on a character boundary, content blocks past the limit are left out, and an
artifact (kept in the checkpoint with the message) that does not fit what is left is dropped.
The note at the end says how big the result was; ``notes(result)["cut_from_bytes"]`` too.

Small results are checked on the event loop in constant time; a result that may be over the
limit is measured and cut in a worker thread, in chunks, so a huge one does not stall the loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from agent_ng.engine.tool_calls import Execute, ToolCallWrapper, noted
from agent_ng.tools.registry import spec_of

MAX_UTF8 = 4
"""Bytes of the longest UTF-8 character: text of ``n`` characters is at most ``4 n`` bytes."""
CHUNK_CHARS = 1 << 20
"""Characters encoded at a time when measuring a long text, so the GIL is let go between."""


def bound_output(default_bytes: int) -> ToolCallWrapper:
    """Cut each call's result to its tool's ``max_output_bytes``, or ``default_bytes``."""

    async def bound(request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        result = await execute(request)
        if not isinstance(result, ToolMessage):
            return result
        limit = spec_of(request.tool).max_output_bytes or default_bytes
        if surely_within(result, limit):
            return result
        return await asyncio.to_thread(bounded, result, limit)

    return bound


def surely_within(message: ToolMessage, limit: int) -> bool:
    """True when ``message`` fits ``limit`` whatever its characters (no artifact, short text)."""
    content = message.content
    return message.artifact is None and isinstance(content, str) and len(content) * MAX_UTF8 <= limit


def bounded(message: ToolMessage, limit: int) -> ToolMessage:
    """``message`` if its content and artifact fit ``limit`` bytes; else a copy cut to fit."""
    blocks = message.content if isinstance(message.content, list) else [message.content]
    sizes = [block_size(b) for b in blocks]
    artifact = 0 if message.artifact is None else json_size(message.artifact)
    total = sum(sizes) + artifact
    if total <= limit:
        return message
    note = cut_note(total, limit)
    room = max(limit - utf8_size(note), 0)
    kept: list[Any] = []
    for block, size in zip(blocks, sizes, strict=True):
        if size > room:
            if isinstance(text := block_text(block), str) and room:
                kept.append(with_text(block, cut_text(text, room)))
            break
        kept.append(block)
        room -= size
    keep_artifact = message.artifact is not None and len(kept) == len(blocks) and artifact <= room
    if isinstance(message.content, str):
        content: str | list[Any] = "".join(kept) + note
    else:
        content = [*kept, {"type": "text", "text": note}]
    cut = message.model_copy(
        update={"content": content, "artifact": message.artifact if keep_artifact else None}
    )
    return noted(cut, cut_from_bytes=total)


def cut_note(total: int, limit: int) -> str:
    """What the model reads at the end of a cut result."""
    return (
        f"\n[cut: the result was {total:,} bytes, over this tool's limit of {limit:,};"
        " the rest is left out]"
    )


def block_text(block: Any) -> str | None:
    """The text of a content block (a string, or a ``text`` block); None for other kinds."""
    if isinstance(block, str):
        return block
    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return block["text"]
    return None


def with_text(block: Any, text: str) -> Any:
    """``block`` with its text replaced."""
    return text if isinstance(block, str) else {**block, "text": text}


def block_size(block: Any) -> int:
    """A content block's size: its text's UTF-8 bytes, or its JSON's (an image, a file)."""
    text = block_text(block)
    return utf8_size(text) if text is not None else json_size(block)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON (what is not JSON counted by its ``str``)."""
    return utf8_size(json.dumps(value, ensure_ascii=False, default=str))


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8, measured a chunk at a time (ASCII text without encoding)."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[i : i + CHUNK_CHARS].encode("utf-8", "surrogatepass"))
        for i in range(0, len(text), CHUNK_CHARS)
    )


def cut_text(text: str, limit: int) -> str:
    """The longest start of ``text`` that is at most ``limit`` bytes in UTF-8."""
    head = text[:limit].encode("utf-8", "surrogatepass")[:limit]
    return head.decode("utf-8", "ignore")
