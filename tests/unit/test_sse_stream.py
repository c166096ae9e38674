"""The SSE streams: the native routes' chunks of the log's batches (``sse_events``), the LangGraph Server
API's events (``sse_text``, ``Frames.sse``), and the response that sends them (``EventStream``),
driven as an ASGI server drives it."""

from __future__ import annotations

import asyncio
import json

import pytest
from sse_starlette import ServerSentEvent

from agent_ng.service.event_log import event_json
from agent_ng.service.langgraph_server.frames import FRAME, Frames, frame
from agent_ng.service.langgraph_server.run_answers import sse_text
from agent_ng.service.runs import sse_events
from agent_ng.service.sse import EventStream, Final

GUARD_S = 5.0


async def batches_then(batches: list, error: Exception | None = None):
    for batch in batches:
        yield batch
    if error is not None:
        raise error


def line(cursor: str, kind: str, **data) -> tuple[str, str, str]:
    return cursor, kind, json.dumps({"type": kind, **data})


async def test_a_batch_is_one_chunk_of_events_with_their_ids_and_the_logged_json_as_it_is():
    lost = []
    batch = [line("1", "run_start", t=0.0), line("2", "content", text="a\\nb", t=0.1)]
    chunks = [c async for c in sse_events("r1", "t1", batches_then([batch, [line("3", "run_end", t=0.2)]]),
                                          on_lost=lambda: lost.append(1))]

    assert chunks[0] == (
        b"id: r1:1\r\nevent: run_start\r\ndata: " + batch[0][2].encode() + b"\r\n\r\n"
        b"id: r1:2\r\nevent: content\r\ndata: " + batch[1][2].encode() + b"\r\n\r\n"
    )
    assert len(chunks) == 2 and chunks[1].startswith(b"id: r1:3\r\nevent: run_end\r\n")
    assert [type(c) for c in chunks] == [bytes, Final], "the run_end's chunk ends the body"
    assert lost == [], "the stream reached its run_end"


async def test_a_log_that_fails_ends_the_stream_with_an_error_run_end_without_an_id():
    lost = []
    batches = batches_then([[line("1", "run_start", t=0.0), line("2", "content", text="a", t=1.5)]],
                           ConnectionError("log store gone"))
    chunks = [c async for c in sse_events("r1", "t1", batches, on_lost=lambda: lost.append(1))]

    assert type(chunks[-1]) is Final
    head, _, data = chunks[-1].decode().removesuffix("\r\n\r\n").partition("\r\ndata: ")
    end = json.loads(data)
    assert head == "event: run_end", "no id: it is not in the log"
    assert (end["status"], end["t"], end["run_id"]) == ("error", 1.5, "r1")
    assert "log store gone" in end["error"]
    assert lost == [1], "the run did not end as far as this stream knows"


class Client:
    """An ASGI server's side of one response: what was sent, and a disconnect to give."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)


async def test_the_response_sends_the_chunks_then_ends_the_body_and_pings_while_idle():
    client, release = Client(), asyncio.Event()

    async def chunks():
        yield b"one"
        await release.wait()
        yield b"two"

    async def release_after_a_ping():
        while not any(m.get("body", b"").startswith(b": ping - ") for m in client.sent):
            await asyncio.sleep(0.01)
        release.set()

    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(EventStream(chunks(), ping=0.05)({"type": "http", "method": "POST"},
                                                              client.receive, client.send),
                             release_after_a_ping())

    start, *body = client.sent
    assert start["status"] == 200 and (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    bodies = [m["body"] for m in body if not m["body"].startswith(b": ping")]
    assert bodies == [b"one", b"two", b""] and [m["more_body"] for m in body][-1] is False


async def test_a_client_that_disconnects_stops_the_stream_and_closes_its_chunks():
    client, closed = Client(), asyncio.Event()

    async def chunks():
        try:
            yield b"one"
            await asyncio.Event().wait()
            yield b"never"
        finally:
            closed.set()

    response = EventStream(chunks(), ping=15)
    serving = asyncio.ensure_future(response({"type": "http", "method": "POST"}, client.receive, client.send))
    async with asyncio.timeout(GUARD_S):
        while len(client.sent) < 2:
            await asyncio.sleep(0.01)
        client.gone.set()
        await serving

    assert closed.is_set()
    assert [m.get("body") for m in client.sent[1:]] == [b"one"], "nothing more once the client is gone"


async def test_a_head_request_gets_the_headers_and_an_empty_body_without_starting_the_stream():
    client, started = Client(), []

    async def chunks():
        started.append(1)
        yield b"one"

    async with asyncio.timeout(GUARD_S):
        await EventStream(chunks(), ping=15)({"type": "http", "method": "HEAD"}, client.receive, client.send)

    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert client.sent[1]["body"] == b"" and started == []


async def test_a_final_chunk_ends_the_body_in_the_same_message_and_closes_the_chunks():
    client, closed = Client(), []

    async def chunks():
        try:
            yield b"one"
            yield Final(b"end")
            yield b"never"
        finally:
            closed.append(1)

    async with asyncio.timeout(GUARD_S):
        await EventStream(chunks(), ping=15)({"type": "http", "method": "POST"}, client.receive, client.send)

    assert [(m["body"], m["more_body"]) for m in client.sent[1:]] == [(b"one", True), (b"end", False)]
    assert closed == [1]


@pytest.mark.parametrize(
    ("event", "data", "id"),
    [("values", '{"messages":[]}', None), ("messages", '[{"content":"a"},{}]', "1-0"), ("error", "two\nlines\r\nend", None)],
)
def test_the_langgraph_server_routes_write_an_event_as_sse_starlette_does(event, data, id):
    assert sse_text(event, data, id).encode() == ServerSentEvent(data=data, event=event, id=id).encode()


@pytest.mark.parametrize(
    "data", [{"messages": [{"content": 'say ,"data": "x"}', "n": 2**70}]}, ["a", {"event": "values"}], None]
)
def test_a_frame_is_sent_with_its_data_as_logged_and_any_other_shape_decoded_alike(data):
    as_logged = event_json(frame("values|ns:1", data))
    reordered = event_json({"data": data, "event": "values|ns:1", "type": FRAME})

    cut = Frames.sse(("7", FRAME, as_logged), resumable=True)
    decoded = Frames.sse(("7", FRAME, reordered), resumable=False)

    assert cut == ("values|ns:1", event_json(data), "7")
    assert decoded == ("values|ns:1", event_json(data), None)
    assert Frames.sse(("8", "run_end", '{"type":"run_end"}'), resumable=True) is None
