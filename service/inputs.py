"""What a request may carry, checked before a run starts; a bad one gets a 422 saying why.

Errors are FastAPI's own validation errors (``{"detail": [{"loc", "msg", "type"}]}``), so a
client reads every rejection the same way.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NoReturn

from fastapi import HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from agent_ng.service.settings import ServiceSettings

THREAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
ThreadId = Annotated[
    str,
    Path(pattern=THREAD_ID_PATTERN, description="Letters, digits and . _ : - (at most 128)."),
]


class RunConfig(BaseModel):
    """The part of LangGraph's run config a client may set."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int | None = Field(default=None, ge=1, le=64)
    """Tools running at once in this run."""
    recursion_limit: int | None = Field(default=None, ge=1, le=10_000)
    tags: list[str] = Field(default_factory=list, max_length=16)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=32)

    def to_config(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude_defaults=True)


class RunRequest(BaseModel):
    """A question for a thread, and how its run goes."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="The question, as the user typed it.")
    config: RunConfig = Field(default_factory=RunConfig)
    on_disconnect: Literal["cancel", "continue"] = Field(
        default="cancel",
        description="What a lost streaming client does to its run: cancel it, or leave it "
        "going so it can be joined again.",
    )


def invalid(loc: tuple[str | int, ...], msg: str, type_: str = "value_error") -> NoReturn:
    """Refuse the request with a 422 shaped like FastAPI's own, at ``loc``."""
    raise RequestValidationError([{"loc": loc, "msg": msg, "type": type_}])


def check_question(text: str, settings: ServiceSettings, *, loc: tuple[str, ...]) -> None:
    """A 422 for an empty question or one past ``AGENT_MAX_INPUT_CHARS``."""
    if not text.strip():
        invalid(loc, "the question is empty", "string_too_short")
    if len(text) > settings.max_input_chars:
        invalid(
            loc,
            f"the question is {len(text):,} characters long; the limit is "
            f"{settings.max_input_chars:,} (AGENT_MAX_INPUT_CHARS)",
            "string_too_long",
        )


def check_thread_id(thread_id: str, *, loc: tuple[str, ...]) -> None:
    """A 422 for a thread id that the routes' path pattern would refuse (one sent in a body)."""
    if not re.match(THREAD_ID_PATTERN, thread_id):
        invalid(
            loc,
            "a thread id is 1 to 128 letters, digits and . _ : - (starting with a letter or digit)",
        )


async def limit_body(request: Request) -> None:
    """Refuse a body larger than ``max_body_bytes`` (413) before it is read and parsed."""
    limit = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(
            413, f"the request body is {int(length):,} bytes; the limit is {limit:,}"
        )
