"""What a request may carry, checked before a run starts; a bad one gets a 422 saying why.

Errors are FastAPI's own validation errors (``{"detail": [{"loc", "msg", "type"}]}``), so a
client reads every rejection the same way; ``validation_error`` sends them without the input
they refused.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NoReturn

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from agent_ng.service.settings import ServiceSettings

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ID_RULE = "1 to 128 letters, digits and . _ : - (starting with a letter or digit)"
SHOWN_ERRORS = 20
"""Errors a 422 lists at most (a body can hold thousands of wrong keys)."""
SHOWN_CHARS = 100
"""Characters of one ``loc`` part or ``msg`` a 422 shows at most (a wrong key is part of ``loc``)."""


def valid_id(value: str) -> str:
    """The one rule for thread and run ids, wherever they come from (path, body, AG-UI).

    ``fullmatch``, not a pattern ending in ``$``: ``$`` also matches before a final newline.
    """
    if ID.fullmatch(value) is None:
        raise ValueError(f"an id is {ID_RULE}")
    return value


Id = Annotated[
    str,
    AfterValidator(valid_id),
    WithJsonSchema({"type": "string", "pattern": f"^{ID.pattern}$", "description": ID_RULE}),
]
ThreadId = Id
RunId = Id


def not_text(text: str) -> str | None:
    """Why ``text`` is not Unicode text, or ``None``: a lone half of a UTF-16 pair (JSON's
    ``"\\ud800"``) parses into a Python string that nothing downstream can encode."""
    try:
        text.encode()
    except UnicodeEncodeError as e:
        return f"character {e.start} is a lone surrogate: the text is not valid Unicode"
    return None


def plain_text(text: str) -> str:
    """A string field's value, refused when it is not Unicode text."""
    if why := not_text(text):
        raise ValueError(why)
    return text


Text = Annotated[str, AfterValidator(plain_text)]


class RunConfig(BaseModel):
    """The part of LangGraph's run config a client may set."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int | None = Field(default=None, ge=1, le=64)
    """Tools running at once in this run."""
    recursion_limit: int | None = Field(default=None, ge=1, le=10_000)
    tags: list[Text] = Field(default_factory=list, max_length=16)
    metadata: dict[Text, Text | int | float | bool] = Field(default_factory=dict, max_length=32)

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
    """A 422 for an empty question, one past ``AGENT_MAX_INPUT_CHARS`` or one that is not text."""
    if not text.strip():
        invalid(loc, "the question is empty", "string_too_short")
    if len(text) > settings.max_input_chars:
        invalid(
            loc,
            f"the question is {len(text):,} characters long; the limit is "
            f"{settings.max_input_chars:,} (AGENT_MAX_INPUT_CHARS)",
            "string_too_long",
        )
    if why := not_text(text):
        invalid(loc, f"the question's {why}", "string_unicode")


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without what was refused: each error's ``loc``, ``msg`` and ``type`` only.

    FastAPI's own handler echoes each wrong value (``input``, ``ctx``), so a 1 MB body came back
    whole; here strings are cut to ``SHOWN_CHARS`` and at most ``SHOWN_ERRORS`` are listed.
    """
    errors = error.errors()
    detail = [
        {"loc": [shown(part) for part in e["loc"]], "msg": shown(e["msg"]), "type": e["type"]}
        for e in errors[:SHOWN_ERRORS]
    ]
    if len(errors) > SHOWN_ERRORS:
        left = len(errors) - SHOWN_ERRORS
        detail.append({"loc": [], "msg": f"and {left:,} more errors", "type": "too_many_errors"})
    return JSONResponse({"detail": detail}, status_code=422)


def shown(part: Any) -> Any:
    """A ``loc`` part or message as a 422 shows it: a string cut to ``SHOWN_CHARS``."""
    if isinstance(part, str) and len(part) > SHOWN_CHARS:
        return part[: SHOWN_CHARS - 1] + "…"
    return part
