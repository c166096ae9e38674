"""A rule-based chat model, used when no OpenAI key or base URL is configured.

``OfflineChatModel`` is a real ``BaseChatModel`` so the whole agent, with its token
streaming and parallel tool calls, can be shown and tested without a network or an ML
model. It reads the conversation and answers the way a tool-calling model would:

- once this turn's tools have run, it states their results, one sentence per call;
- otherwise it asks, in one message, for every bound tool the last user message calls
  for, in the order they appear: ``calculator`` for arithmetic ("17*23", "2^10"),
  ``count_primes`` for "primes below N", ``file_search`` for "files containing X";
- asked what the user asked before, it lists the earlier questions;
- anything else gets a short note on what the offline model can do.

Like a real model it streams: text in word-sized chunks (a word and the whitespace after
it), tool calls as OpenAI sends them (name and id first, then fragments of the JSON
arguments). The final chunk carries the finish reason and a word-count usage estimate.
There are no sleeps: chunks come as fast as they are made. Stop sequences are ignored.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolCall,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

MODEL_NAME = "agent-ng-offline"
MAX_ECHOED_WORDS = 40
"""A tool result quoted back in a generic sentence is cut to this many words."""

_NUMBER = r"(?:(?:0|[1-9]\d*(?:_\d+)*)(?:\.\d+)?|\.\d+)"
_OPERAND = rf"(?:[-+]?\(\s*)*[-+]?{_NUMBER}(?:\s*\))*"
_OPERATOR = r"(?:\*\*|//|[-+*/%^])"
_EXPRESSION = re.compile(
    rf"(?<![\w.])(?<!\d,)(?<!\w\(){_OPERAND}(?:\s*{_OPERATOR}\s*{_OPERAND})+(?!\w)"
)
_PRIME_LIMIT = re.compile(
    r"\b(?:primes|prime\s+numbers)(?:\s+(?:are|is|that|which|there|exist|lie))*"
    r"\s+(below|under|less\s+than|up\s+to)\s+(\d+(?:[,_]\d+)*)\b"
    rf"(?!\s*{_OPERATOR}\s*[\d(])",
    re.IGNORECASE,
)
_FILE_PATTERN = re.compile(
    r"\b(?:files?\s+(?:containing|that\s+contains?)|search\s+(?:the\s+)?files\s+for)\s+"
    r"(?:\"([^\"]+)\"|'([^']+)'|“([^”]+)”|([^\s\"“”?!,;]+))",
    re.IGNORECASE,
)
_EARLIER_QUESTIONS = re.compile(
    r"what\s+did\s+i\s+(?:\w+\s+)?ask|what\s+have\s+i\s+asked"
    r"|(?:previous|earlier|last)\s+questions?",
    re.IGNORECASE,
)
_CAPABILITIES = {
    "calculator": "do arithmetic with the calculator",
    "count_primes": "count primes below a number",
    "file_search": "search files for a pattern",
}

Match = tuple[int, dict[str, Any]]
"""Where a tool request starts in the user's text, and the arguments it calls for."""


class OfflineChatModel(BaseChatModel):
    """Rule-based stand-in for a streaming, tool-calling chat model (see the module doc)."""

    @property
    def _llm_type(self) -> str:
        return MODEL_NAME

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` as OpenAI tool dicts; ``tool_choice`` is accepted and ignored."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for message in respond(messages, _bound_tool_names(kwargs.get("tools"))):
            chunk = ChatGenerationChunk(message=message)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for message in respond(messages, _bound_tool_names(kwargs.get("tools"))):
            chunk = ChatGenerationChunk(message=message)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _bound_tool_names(tools: Sequence[Any] | None) -> set[str]:
    return {convert_to_openai_tool(t)["function"]["name"] for t in tools or ()}


def respond(messages: Sequence[BaseMessage], tool_names: set[str]) -> list[AIMessageChunk]:
    """The chunks of the model's answer to ``messages``, the last one carrying the metadata."""
    if results := _answered_calls(messages):
        return _finish(_text_chunks(answer_from_results(results)), messages, "stop")
    question = _last_human_text(messages)
    if calls := plan_tool_calls(question, tool_names):
        return _finish(_call_chunks(calls), messages, "tool_calls")
    if _EARLIER_QUESTIONS.search(question):
        return _finish(_text_chunks(_earlier_questions(messages)), messages, "stop")
    return _finish(_text_chunks(_introduction(tool_names)), messages, "stop")


def _last_human_text(messages: Sequence[BaseMessage]) -> str:
    return next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")


def _current_turn(messages: Sequence[BaseMessage]) -> Sequence[BaseMessage]:
    """The messages after the last human message."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage):
            return messages[index + 1 :]
    return messages


def _answered_calls(messages: Sequence[BaseMessage]) -> list[tuple[ToolCall, ToolMessage]]:
    """This turn's tool calls that have a result, in the order they were made."""
    turn = _current_turn(messages)
    results = {m.tool_call_id: m for m in turn if isinstance(m, ToolMessage)}
    calls = [call for m in turn if isinstance(m, AIMessage) for call in m.tool_calls]
    return [(call, results[call["id"]]) for call in calls if call["id"] in results]


def plan_tool_calls(text: str, tool_names: set[str]) -> list[ToolCall]:
    """The bound tools that ``text`` asks for, in the order the requests appear in it."""
    finders: dict[str, Callable[[str], list[Match]]] = {
        "calculator": _find_expressions,
        "count_primes": _find_prime_limits,
        "file_search": _find_file_patterns,
    }
    found = [
        (start, name, args)
        for name, find in finders.items()
        if name in tool_names
        for start, args in find(text)
    ]
    return [
        tool_call(name=name, args=args, id=f"call_{uuid.uuid4().hex[:12]}")
        for _, name, args in sorted(found, key=lambda item: item[0])
    ]


def _find_expressions(text: str) -> list[Match]:
    """Arithmetic such as "17*23" or "(2 + 3) * 4": numbers joined by at least one operator."""
    found = []
    for match in _EXPRESSION.finditer(text):
        expression = _balanced(match.group().strip())
        if expression:
            found.append((match.start(), {"expression": expression}))
    return found


def _balanced(expression: str) -> str | None:
    """``expression`` without the unmatched parentheses at its ends, or None if still unbalanced."""
    while expression.startswith("(") and expression.count("(") > expression.count(")"):
        expression = expression[1:].lstrip()
    while expression.endswith(")") and expression.count(")") > expression.count("("):
        expression = expression[:-1].rstrip()
    depth = 0
    for char in expression:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            return None
    return expression if depth == 0 else None


def _find_prime_limits(text: str) -> list[Match]:
    """ "primes below 200,000" and the like; "up to N" includes N, so it asks below N + 1."""
    return [
        (match.start(), {"below": _prime_bound(match.group(1), match.group(2))})
        for match in _PRIME_LIMIT.finditer(text)
    ]


def _prime_bound(word: str, number: str) -> int:
    limit = int(re.sub(r"[,_]", "", number))
    return limit + 1 if word.lower().startswith("up") else limit


def _find_file_patterns(text: str) -> list[Match]:
    """ "files containing X" or "search files for X", X a word or a quoted string."""
    found = []
    for match in _FILE_PATTERN.finditer(text):
        quoted = match.group(1) or match.group(2) or match.group(3)
        pattern = quoted or match.group(4).rstrip(".:'")
        if pattern:
            found.append((match.start(), {"pattern": pattern}))
    return found


def answer_from_results(results: Sequence[tuple[ToolCall, ToolMessage]]) -> str:
    """One sentence per tool call, in order, saying what its result was."""
    return " ".join(_result_sentence(call, message) for call, message in results)


def _result_sentence(call: ToolCall, message: ToolMessage) -> str:
    name, content = call["name"], message.text.strip()
    if message.status == "error":
        reason = re.sub(r"^error:\s*", "", _first_line(content), flags=re.IGNORECASE)
        return f"The {name} tool failed: {_sentence_body(reason)}."
    sentences: dict[str, Callable[[dict[str, Any], str], str | None]] = {
        "calculator": _calculator_sentence,
        "count_primes": _primes_sentence,
        "file_search": _file_search_sentence,
    }
    sentence = sentences[name](call["args"], content) if name in sentences else None
    return sentence or f"{name} returned: {_sentence_body(content)}."


def _calculator_sentence(args: dict[str, Any], content: str) -> str | None:
    expression = args.get("expression")
    if not isinstance(expression, str) or _parse_number(content) is None:
        return None
    return f"{expression.strip()} = {content}."


def _primes_sentence(args: dict[str, Any], content: str) -> str | None:
    count, below = _parse_number(content), _parse_number(str(args.get("below", "")))
    if not isinstance(count, int) or not isinstance(below, int):
        return None
    if count == 1:
        return f"There is 1 prime below {below:,}."
    return f"There are {count:,} primes below {below:,}."


def _file_search_sentence(args: dict[str, Any], content: str) -> str | None:
    pattern = args.get("pattern")
    if not isinstance(pattern, str):
        return None
    if not content:
        return f'No files contain "{pattern}".'
    return f'Files containing "{pattern}": {_sentence_body(content)}.'


def _parse_number(text: str) -> int | float | None:
    """``text`` as a number ("17984", "17,984", "0.5"), or None if it is not one."""
    plain = re.sub(r"(?<=\d)[,_](?=\d)", "", text.strip())
    for kind in (int, float):
        try:
            return kind(plain)
        except ValueError:
            pass
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _sentence_body(text: str) -> str:
    """``text`` on one line, cut to ``MAX_ECHOED_WORDS`` words, without a closing period."""
    words = text.split()
    body = " ".join(words[:MAX_ECHOED_WORDS]) + (" …" if len(words) > MAX_ECHOED_WORDS else "")
    return body.rstrip(".") or "nothing"


def _earlier_questions(messages: Sequence[BaseMessage]) -> str:
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    asked = [" ".join(m.text.split()) for m in humans[:-1]]
    if not any(asked):
        return "You have not asked anything before this."
    return "Earlier you asked: " + ", then ".join(f'"{q}"' for q in asked if q) + "."


def _introduction(tool_names: set[str]) -> str:
    bound = [what for name, what in _CAPABILITIES.items() if name in tool_names]
    if bound:
        can = f"With the tools I have here I can {_join_words(bound)}."
    else:
        can = f"I can {_join_words(list(_CAPABILITIES.values()))} once those tools are bound."
    return (
        "This is the offline model of agent-ng, a rule-based stand-in used because no "
        f"OpenAI key is configured. {can} Configure an OpenAI key for full answers."
    )


def _join_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def word_chunks(text: str) -> list[str]:
    """Word-sized pieces of ``text``: a word and the whitespace after it; they join to ``text``."""
    return re.findall(r"\s*\S+\s*", text)


def _text_chunks(text: str) -> list[AIMessageChunk]:
    return [AIMessageChunk(content=word) for word in word_chunks(text)]


def args_fragments(args: dict[str, Any]) -> list[str]:
    """The JSON of ``args`` in pieces as a model streams it: '{"below": ', '200000', '}'."""
    head, separator, rest = json.dumps(args).partition(": ")
    return [head + separator, rest[:-1], rest[-1:]] if separator else [head]


def _call_chunks(calls: Sequence[ToolCall]) -> list[AIMessageChunk]:
    """Each call as OpenAI streams it (name, id and a first fragment, then the rest), then an
    empty closing chunk: a chunk marked last hides its ``tool_call_chunks`` from
    ``content_blocks``, so LangChain's v3 event bridge would drop a fragment it held."""
    chunks = []
    for index, call in enumerate(calls):
        for position, fragment in enumerate(args_fragments(call["args"])):
            first = position == 0
            piece = tool_call_chunk(
                name=call["name"] if first else None,
                id=call["id"] if first else None,
                args=fragment,
                index=index,
            )
            chunks.append(AIMessageChunk(content="", tool_call_chunks=[piece]))
    return [*chunks, AIMessageChunk(content="")]


def _finish(
    chunks: list[AIMessageChunk], messages: Sequence[BaseMessage], finish_reason: str
) -> list[AIMessageChunk]:
    """``chunks`` with usage, model name and finish reason on the last one."""
    input_tokens = sum(len(m.text.split()) for m in messages)
    usage = UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=len(chunks),
        total_tokens=input_tokens + len(chunks),
    )
    last = chunks[-1].model_copy(
        update={
            "usage_metadata": usage,
            "response_metadata": {"model_name": MODEL_NAME, "finish_reason": finish_reason},
            "chunk_position": "last",
        }
    )
    return [*chunks[:-1], last]
