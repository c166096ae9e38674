"""The event contract (``agent_ng.contract``) has one owner, and every consumer handles every type.

A type added to ``EventType`` fails here until the CLI views, the AG-UI translation and the web page
each handle it, or name it among the events they deliberately show nothing for.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re

import pytest
from langchain_core.messages import ToolMessage, message_to_dict
from rich.console import Console
from rich.text import Text

from agent_ng.cli.view import PLAIN_VIEW_SKIPS, TURN_VIEW_SKIPS, PlainView, TurnView
from agent_ng.contract import (
    CUSTOM_EVENT,
    EVENT_KEY,
    FIELDS,
    RECORDS,
    AgentEvent,
    EventType,
    read_record,
    tool_progress,
    tool_start,
)
from agent_ng.engine.recorded_results import OLD_NOTES_KEY, deserialize, serialize
from agent_ng.engine.tool_calls import NOTES_KEY, noted, notes
from agent_ng.graph.events import _Run
from agent_ng.nodes import LLM
from agent_ng.service.agui import SENT_WITH_RUN_END, AguiTranslation
from agent_ng.tools import progress
from agent_ng.tools.registry import SPEC_KEY
from tests.helpers.paths import REPO

COMMON = {"type", "run_id", "thread_id", "t"}
CALL = "c1"
SAMPLE = {
    "input": "what is 17*23?",
    "attempt": 1,
    "text": "17*23 is ",
    "node": LLM,
    "tool_call_id": CALL,
    "name": "calculator",
    "args": {"expression": "17*23"},
    "eta_s": 1.5,
    "cached": False,
    "progress": 0.5,
    "message": "halfway",
    "elapsed_s": 0.75,
    "content": "391",
    "status": "success",
    "error": "boom",
    "value": {"type": "approval", "tool_call_id": CALL, "name": "calculator", "args": {}, "description": None},
    "interrupt_id": "i1",
    "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
}
"""A plausible value for every field a type carries; a new field needs one here."""
OVERRIDES = {EventType.RUN_END: {"status": "max_steps"}}


def sample(type_: EventType, t: float = 1.0, **changes) -> AgentEvent:
    fields = {name: SAMPLE[name] for name in FIELDS[type_]} | OVERRIDES.get(type_, {}) | changes
    return AgentEvent(type_, "r1", "t1", t, **fields)


PRIMING = [sample(EventType.RUN_START, t=0.0), sample(EventType.TOOL_CALL, t=0.5)]
"""What comes before the event under test, so a tool event finds its call already on screen."""


def under_test(type_: EventType) -> AgentEvent:
    """One event of ``type_`` after ``PRIMING``; a ``tool_call`` is for another call than the primed one."""
    return sample(type_, tool_call_id="c2") if type_ == EventType.TOOL_CALL else sample(type_)


# ---- the contract itself -----------------------------------------------------------------


def test_every_type_has_its_fields_and_each_field_is_an_attribute_of_the_event():
    assert set(FIELDS) == set(EventType)
    slots = {f.name for f in dataclasses.fields(AgentEvent)}
    for type_, names in FIELDS.items():
        assert set(names) <= slots - COMMON, type_
        assert sample(type_).to_dict().keys() == COMMON | set(names)


def test_a_misspelt_type_is_refused_where_it_is_written():
    with pytest.raises(ValueError, match="unknown event type 'tool_strat'"):
        AgentEvent("tool_strat", "r1", "t1", 0.0)
    written = []
    with progress.tool_call_scope(CALL, "calculator", written.append) as scope:
        with pytest.raises(TypeError):
            scope.emit(tool_start, args={}, eta_s=None, cahced=False)
        with pytest.raises(TypeError):
            scope.emit("tool_start", args={}, eta_s=None, cached=False)
    assert written == []


def test_each_record_carries_exactly_its_types_fields_and_the_adapter_reads_it_back():
    made = set()
    for record in RECORDS:
        keywords = [p.name for p in inspect.signature(record).parameters.values() if p.kind is p.KEYWORD_ONLY]
        written = record(CALL, "calculator", **{name: SAMPLE[name] for name in keywords})
        type_, fields = read_record(written)
        made.add(type_)
        assert record.__name__ == type_.value
        assert set(fields) == set(FIELDS[type_]), type_
        [event] = _Run("r1", "t1").translate("custom", written)
        assert event.to_dict() | {"t": 1.0} == sample(type_).to_dict()
    assert made == {
        EventType.TOOL_START,
        EventType.TOOL_PROGRESS,
        EventType.TOOL_RESULT,
        EventType.TOOL_COMPLETE,
        EventType.TOOL_ERROR,
    }


def test_the_wire_format_stays_as_it_was():
    record = tool_progress(CALL, "count_primes", progress=0.5, message="half", elapsed_s=1.0, eta_s=1.0)
    assert json.dumps(record) == json.dumps(
        {
            "agent_ng": "tool_progress",
            "tool_call_id": CALL,
            "name": "count_primes",
            "progress": 0.5,
            "message": "half",
            "elapsed_s": 1.0,
            "eta_s": 1.0,
        }
    )
    assert type(record[EVENT_KEY]) is str
    assert CUSTOM_EVENT == "agent_ng"  # the README names the custom event of astream_events
    event = sample(EventType.CONTENT)
    assert type(event.to_dict()["type"]) is str
    assert json.dumps(event.to_dict()) == json.dumps(
        {"type": "content", "run_id": "r1", "thread_id": "t1", "t": 1.0, "text": "17*23 is ", "node": "llm"}
    )


def test_each_key_has_one_meaning():
    assert len({EVENT_KEY, NOTES_KEY, SPEC_KEY}) == 3


def test_a_result_recorded_before_the_notes_had_their_own_key_is_replayed_with_its_notes():
    old = ToolMessage(
        "late", tool_call_id=CALL, name="slow", status="error", response_metadata={OLD_NOTES_KEY: {"timed_out": True}}
    )
    replayed = deserialize(json.dumps(message_to_dict(old)))
    assert notes(replayed) == {"timed_out": True} and OLD_NOTES_KEY not in replayed.response_metadata
    new = noted(ToolMessage("391", tool_call_id=CALL, name="calculator"), elapsed_s=0.5)
    assert notes(deserialize(serialize(new))) == {"elapsed_s": 0.5}


def test_records_that_are_not_ours_are_left_alone():
    assert read_record({"step": 3}) is None
    assert read_record({EVENT_KEY: "not_an_event"}) is None
    assert read_record("text") is None
    assert _Run("r1", "t1").translate("custom", {EVENT_KEY: ["odd"]}) == []


# ---- the consumers -----------------------------------------------------------------------


def turn_view_state(view: TurnView) -> tuple:
    blocks = [b.plain if isinstance(b, Text) else {k: dataclasses.asdict(r) for k, r in b.items()} for b in view.blocks]
    return view.status, blocks


@pytest.mark.parametrize("type_", list(EventType))
def test_the_live_view_shows_each_type_or_skips_it_on_purpose(type_):
    view = TurnView()
    for event in PRIMING:
        view.handle(event)
    before = turn_view_state(view)

    view.handle(under_test(type_))

    changed = turn_view_state(view) != before
    assert changed is (type_ not in TURN_VIEW_SKIPS), f"TurnView and {type_.value}"
    Console(file=io.StringIO(), width=100).print(view)


@pytest.mark.parametrize("type_", list(EventType))
def test_the_plain_view_shows_each_type_or_skips_it_on_purpose(type_):
    out = io.StringIO()
    view = PlainView(out)
    for event in PRIMING:
        view.handle(event)
    before = out.getvalue(), view.status

    view.handle(under_test(type_))

    changed = (out.getvalue(), view.status) != before
    assert changed is (type_ not in PLAIN_VIEW_SKIPS), f"PlainView and {type_.value}"


def finished(translation: AguiTranslation) -> dict:
    [end] = translation.translate(sample(EventType.RUN_END, t=2.0, status="interrupted"))
    return end.model_dump(exclude={"timestamp"})


@pytest.mark.parametrize("type_", list(EventType))
def test_ag_ui_translates_each_type_or_sends_it_with_the_run_end(type_):
    translation, without = AguiTranslation("t1", "r1"), AguiTranslation("t1", "r1")
    for event in PRIMING:
        translation.translate(event)
        without.translate(event)

    out = translation.translate(under_test(type_))

    if type_ in SENT_WITH_RUN_END:
        assert out == [] and finished(translation) != finished(without), f"AG-UI and {type_.value}"
    else:
        assert out, f"AG-UI sends nothing for {type_.value}"


def page_handlers() -> set[str]:
    source = (REPO / "service" / "static" / "app.js").read_text()
    block = re.search(r"^const EVENT_HANDLERS = \{\n(.*?)^\};", source, re.S | re.M)
    assert block, "app.js keeps what it does per event type in one `const EVENT_HANDLERS = {...};`"
    return set(re.findall(r"^  (\w+):", block.group(1), re.M))


def test_the_page_has_a_handler_for_each_type_and_for_no_other():
    assert page_handlers() == {t.value for t in EventType}
