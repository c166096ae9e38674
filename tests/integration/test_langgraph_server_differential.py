"""``agent-ng serve``'s ``/langgraph`` answers a ``langgraph_sdk`` client as ``langgraph dev`` does.

One client script (``tests.helpers.langgraph_traffic.traffic``) runs against the real
``langgraph dev`` serving ``langgraph.json`` and against ``agent-ng serve``, both with the
offline model, and what each sent is compared, ids, times and other values aside:

- streamed runs, per stream mode (``values``/``updates``/``messages-tuple``/``custom`` together,
  legacy ``messages``, ``events``, ``debug``): the order of the SSE event names and the shape
  of each payload (its keys, nested, and the JSON type of each value); for ``events``, where
  callbacks legitimately differ, only the order of (kind, name) of the model's, the graph nodes'
  and the custom events, the keys every event has, and the shape of a streamed chunk;
- assistants and threads: the shape of every answer (create, get, update, search, state, state
  at a checkpoint, history, runs list);
- every response's status, content type and ``Location`` / ``Content-Location`` headers;
- the status codes of bad requests, and a second run on a busy thread under each
  ``multitask_strategy``: its status, both runs' final status, the thread's messages.

Where ``langgraph dev`` itself varies from one run to the next (resumable event ids repeat
within a millisecond; nothing else in these scenarios, checked by recording it twice) the
comparison leaves it out. Where we differ on purpose, ``INTENDED`` says so and why.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.hostile import agent_serve
from tests.helpers.langgraph_dev import langgraph_dev
from tests.helpers.langgraph_traffic import DEV_ENV, STREAM_MODES, traffic

ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INTENDED: dict[tuple[str, ...], tuple[Any, ...]] = {
    # A field we do not serve is refused by name (the rule); langgraph dev drops an
    # unknown field silently and serves interrupt_before.
    ("errors", "unknown_field"): (200, 422, "no_such_field"),
    ("errors", "unsupported_field"): (200, 422, "interrupt_before"),
    # Both input and command: langgraph dev runs the command and drops the input unsaid; we
    # never drop part of a request silently.
    ("errors", "input_and_command"): (200, 422, "command"),
    # The graph name is an assistant id everywhere (the rule); langgraph dev takes it
    # for runs only.
    ("assistants", "GET /assistants/agent"): (422, 200, ""),
    # A cancel keeps what the user saw (docs/guarantees.md): the stopped call gets its
    # "cancelled" result and the thread is idle; langgraph dev leaves the call unanswered and
    # the thread interrupted.
    ("busy", "reject", "messages"): (["human", "ai"], ["human", "ai", "tool"]),
    ("busy", "reject", "thread_status"): ("interrupted", "idle"),
    # langgraph dev's checkpointer adapter (langgraph_api._checkpointer._adapter._enrich_metadata)
    # writes the thread's id into every checkpoint's metadata; our savers store what LangGraph's
    # own do, which leave it out (the id is in the checkpoint's address), so a checkpoint reads
    # the same whichever of agent-ng ask, the native route or /langgraph wrote it.
    ("shape", "threads"): (r"threads\.(state|state_at|history\[\d+\])\.metadata\.thread_id: langgraph dev only",),
}
"""Where we answer otherwise on purpose. ``("errors", case)`` (and ``(scenario, request)``): a
request we answer with another status, as (langgraph dev's, ours, what our refusal must name);
``("busy", strategy, key)``: a recorded outcome of a busy thread, as (langgraph dev's, ours);
``("shape", scenario)``: the shape differences we have, as patterns of the lines that report them."""
DEPLOYMENT_KEYS = frozenset({
    "langgraph_plan", "langgraph_host", "langgraph_api_url", "langgraph_api_version", "langgraph_auth_user",
    "langgraph_auth_user_id", "langgraph_auth_permissions", "langgraph_request_id", "__request_start_time_ms__",
    "__after_seconds__", "__pregel_node_finished", "langsmith_session_name",
})
"""Keys ``langgraph dev`` adds to configs and metadata about itself (its plan, host, URL and API
version), its auth users and its request bookkeeping: nothing a client reads, left out."""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[dict, dict]:
    """The script's traffic: ``langgraph dev``'s, then ours."""
    dev_home, our_home = tmp_path_factory.mktemp("langgraph-dev"), tmp_path_factory.mktemp("agent-ng")
    with langgraph_dev(dev_home, **DEV_ENV, AGENT_DATA_DIR=str(dev_home)) as url:
        dev = asyncio.run(traffic(url))
    with agent_serve(Path(our_home)) as server:
        ours = asyncio.run(traffic(f"{server.url}/langgraph"))
    return dev, ours


def shape(value: Any) -> Any:
    """Keys (ids in them as ``{id}``) and JSON types, values aside."""
    if isinstance(value, dict):
        return {ID.sub("{id}", str(k)): shape(v) for k, v in value.items() if k not in DEPLOYMENT_KEYS}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def shape_differences(dev: Any, ours: Any, where: str) -> list[str]:
    """Where two shapes part: a key only one side has, a type that differs, a list's length."""
    if isinstance(dev, dict) and isinstance(ours, dict):
        out = [f"{where}.{k}: langgraph dev only" for k in dev if k not in ours]
        out += [f"{where}.{k}: ours only" for k in ours if k not in dev]
        for k in dev.keys() & ours.keys():
            out += shape_differences(dev[k], ours[k], f"{where}.{k}")
        return out
    if isinstance(dev, list) and isinstance(ours, list):
        out = [f"{where}: {len(dev)} items in langgraph dev, {len(ours)} in ours"] if len(dev) != len(ours) else []
        for i, (d, o) in enumerate(zip(dev, ours, strict=False)):
            out += shape_differences(d, o, f"{where}[{i}]")
        return out
    if isinstance(dev, dict | list) or isinstance(ours, dict | list) or dev != ours:
        return [f"{where}: {_brief(dev)} in langgraph dev, {_brief(ours)} in ours"]
    return []


def _brief(shape_: Any) -> str:
    if isinstance(shape_, dict):
        return "an object"
    if isinstance(shape_, list):
        return "a list"
    return shape_


def sequence_differences(dev: list[str], ours: list[str], where: str) -> list[str]:
    """The edits that turn one sequence of names into the other."""
    matcher = difflib.SequenceMatcher(a=dev, b=ours, autojunk=False)
    return [
        f"{where}[{i1}:{i2}] {dev[i1:i2]} in langgraph dev, [{j1}:{j2}] {ours[j1:j2]} in ours"
        for op, i1, i2, j1, j2 in matcher.get_opcodes()
        if op != "equal"
    ]


def stream_differences(dev: list[dict], ours: list[dict], where: str) -> list[str]:
    """Event names in order; the payloads' shapes where the names agree, each difference said
    once with the events it is in."""
    names = sequence_differences([e["event"] for e in dev], [e["event"] for e in ours], f"{where} events")
    if names:
        return names
    seen: dict[str, list[int]] = {}
    for i, (d, o) in enumerate(zip(dev, ours, strict=True)):
        for line in shape_differences(shape(d["data"]), shape(o["data"]), f"{where} {d['event']}"):
            seen.setdefault(line, []).append(i)
    return [f"{line} (events {_spans(at)})" for line, at in seen.items()]


def _spans(indices: list[int]) -> str:
    """``[2, 3, 4, 9]`` as ``#2-4, #9``."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"#{a}" if a == b else f"#{a}-{b}" for a, b in spans)


def outline(events: list[dict]) -> list[str]:
    """An ``events`` stream as (kind, name) of the model's, the nodes', tools' and custom events."""
    out = []
    for e in events:
        data = e["data"]
        if e["event"] != "events":
            out.append(e["event"])
        elif data["event"].startswith(("on_chat_model", "on_tool", "on_custom")) or (
            data["event"].startswith("on_chain") and data["metadata"].get("langgraph_node") == data["name"]
        ):
            out.append(f"{data['event']} {data['name']}")
    return out


def events_mode_differences(dev: list[dict], ours: list[dict]) -> list[str]:
    out = sequence_differences(outline(dev), outline(ours), "streams.events outline")
    keys = [sorted({k for e in side if e["event"] == "events" for k in e["data"]}) for side in (dev, ours)]
    if keys[0] != keys[1]:
        out.append(f"streams.events keys: {keys[0]} in langgraph dev, {keys[1]} in ours")
    chunks = [next(e["data"]["data"] for e in side if e["event"] == "events"
                   and e["data"]["event"] == "on_chat_model_stream") for side in (dev, ours)]
    return out + shape_differences(shape(chunks[0]), shape(chunks[1]), "streams.events on_chat_model_stream data")


def responses_differences(dev: list[dict], ours: list[dict], where: str) -> list[str]:
    """Requests in order, and each response's status, content type and location headers."""
    names = sequence_differences([r["request"] for r in dev], [r["request"] for r in ours], f"{where} requests")
    if names:
        return names
    return [
        f"{where} {d['request']} (#{i}): {k} {d[k]!r} in langgraph dev, {o[k]!r} in ours"
        for i, (d, o) in enumerate(zip(dev, ours, strict=True))
        for k in ("status", "content_type", "location", "content_location")
        if d[k] != o[k] and INTENDED.get((where, d["request"]), ())[:2] != (d["status"], o["status"])
    ]


def failed(dev: dict, ours: dict, scenario: str) -> list[str]:
    return [f"{scenario} failed in {side}: {rec['failed']}"
            for side, rec in (("langgraph dev", dev), ("ours", ours)) if "failed" in rec]


def report(lines: list[str]) -> str:
    return "\n".join(["differences from langgraph dev:", *lines])


@pytest.mark.parametrize("mode", list(STREAM_MODES))
def test_a_streamed_run_sends_the_events_langgraph_dev_sends(recorded, mode):
    dev, ours = (side["streams"] for side in recorded)
    lines = failed(dev, ours, "streams")
    if not lines:
        d, o = dev[mode], ours[mode]
        lines = (events_mode_differences(d["events"], o["events"]) if mode == "events"
                 else stream_differences(d["events"], o["events"], f"streams.{mode}"))
        lines += responses_differences(d["responses"], o["responses"], f"streams.{mode}")
    assert not lines, report(lines)


@pytest.mark.parametrize("scenario", ["info", "assistants", "threads"])
def test_answers_have_langgraph_devs_shape(recorded, scenario):
    dev, ours = (side[scenario] for side in recorded)
    lines = failed(dev, ours, scenario)
    if not lines:
        lines = shape_differences(shape({k: v for k, v in dev.items() if k != "responses"}),
                                  shape({k: v for k, v in ours.items() if k != "responses"}), scenario)
        if "responses" in dev:
            lines += responses_differences(dev["responses"], ours["responses"], scenario)
    intended = [re.compile(p) for p in INTENDED.get(("shape", scenario), ())]
    lines = [line for line in lines if not any(p.fullmatch(line) for p in intended)]
    assert not lines, report(lines)


def test_bad_requests_get_langgraph_devs_status_codes(recorded):
    dev, ours = (side["errors"] for side in recorded)
    lines = failed(dev, ours, "errors")
    for case in [] if lines else dev:
        d, o = dev[case], ours[case]
        *statuses, field = INTENDED.get(("errors", case), (d["status"], d["status"], ""))
        if [d["status"], o["status"]] != statuses:
            lines.append(f"errors.{case}: {d['status']} {d['detail'][:200]!r} in langgraph dev, "
                         f"{o['status']} {o['detail'][:200]!r} in ours")
        elif field not in o["detail"]:
            lines.append(f"errors.{case}: ours does not name {field!r}: {o['detail'][:200]!r}")
    assert not lines, report(lines)


def test_a_second_run_on_a_busy_thread_is_treated_as_langgraph_dev_treats_it(recorded):
    dev, ours = (side["busy"] for side in recorded)
    lines = failed(dev, ours, "busy")
    for strategy in [] if lines else dev:
        d, o = dev[strategy], ours[strategy]
        if failure := failed(d, o, f"busy.{strategy}"):
            lines += failure
            continue
        lines += [
            f"busy.{strategy}.{k}: {d.get(k)!r} in langgraph dev, {o.get(k)!r} in ours"
            for k in ("second_status", "second_run_status", "first_join", "first_final", "second_final",
                      "messages", "thread_status")
            if d.get(k) != o.get(k) and INTENDED.get(("busy", strategy, k)) != (d.get(k), o.get(k))
        ]
        lines += shape_differences(shape(d.get("second_join")), shape(o.get("second_join")),
                                   f"busy.{strategy}.second_join")
        lines += responses_differences(d["responses"], o["responses"], f"busy.{strategy}")
    assert not lines, report(lines)

