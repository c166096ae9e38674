"""``http_fetch``: SSRF refusals, streaming with progress, the byte limit, redirects.

A local server on 127.0.0.1 plays the web; it is reachable only because each test that
fetches from it allows 127.0.0.1 explicitly. Host names are resolved by a fake resolver
patched onto the event loop (the one ``http_fetch`` uses), never by real DNS. HTTPS runs
against a small TLS server whose certificate comes from a test CA (trustme).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trustme
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent_ng.graph.agent import build_graph
from agent_ng.graph.events import stream
from agent_ng.settings import Settings
from agent_ng.tools import progress
from agent_ng.tools.http_fetch import AddressPolicy, make_http_fetch, parse_address
from agent_ng.tools.registry import spec_of
from tests.helpers.openai_server import running_server
from tests.helpers.scripted_model import Reply, ScriptedModel, calls

GUARD_S = 10
CHUNK = 16_384
CHUNKS = 6


def web_app(hits: list[str]) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next):
        hits.append(request.url.path)
        return await call_next(request)

    async def chunks(count: int | None) -> AsyncIterator[bytes]:
        sent = 0
        while count is None or sent < count:
            yield b"x" * CHUNK
            sent += 1

    @app.get("/sized")
    async def sized():
        return StreamingResponse(
            chunks(CHUNKS), media_type="text/plain", headers={"content-length": str(CHUNK * CHUNKS)}
        )

    @app.get("/unsized")
    async def unsized():
        return StreamingResponse(chunks(CHUNKS), media_type="text/plain")

    @app.get("/endless")
    async def endless():
        return StreamingResponse(chunks(None), media_type="text/plain")

    @app.get("/host")
    async def host(request: Request):
        return PlainTextResponse(f"host={request.headers['host']}")

    @app.get("/redirect")
    async def redirect(to: str):
        return RedirectResponse(to, status_code=302)

    @app.get("/loop")
    async def loop():
        return RedirectResponse("/loop", status_code=307)

    @app.get("/odd-charset")
    async def odd_charset():
        return PlainTextResponse("héllo".encode(), headers={"content-type": "text/plain; charset=no-such-codec"})

    @app.get("/binary")
    async def binary():
        return StreamingResponse(chunks(1), media_type="image/png")

    @app.get("/compressed")
    async def compressed():
        body = zlib.compress(b"y" * CHUNK * CHUNKS, wbits=zlib.MAX_WBITS | 16)
        return Response(body, media_type="text/plain", headers={"content-encoding": "gzip"})

    return app


@pytest.fixture(scope="module")
def web_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    with running_server(web_app(hits)) as base_url:
        yield base_url.removesuffix("/v1"), hits


@pytest.fixture
def web(web_server) -> tuple[str, list[str]]:
    """The local server's origin (``http://127.0.0.1:PORT``) and the paths asked for in this test."""
    origin, hits = web_server
    hits.clear()
    return origin, hits


@contextmanager
def recorded_progress() -> Iterator[list[dict]]:
    records: list[dict] = []
    with progress.tool_call_scope("call_1", "http_fetch", records.append):
        yield records


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Answer ``getaddrinfo`` for the names in ``answers`` (one list of addresses per lookup,
    the last repeating); other names go to the real resolver. Returns the names looked up."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    asked: list[str] = []

    async def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return await real(host, port, *args, **kwargs)
        asked.append(host)
        round_ = answers[host][min(len(asked) - 1, len(answers[host]) - 1)]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in round_
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


async def fetch(tool, **args) -> str:
    async with asyncio.timeout(GUARD_S):
        return await tool.ainvoke(args)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:{port}/sized", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:{port}/sized", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://100.64.0.1/", "non-public"),
    ],
)
async def test_private_destinations_are_refused_before_any_connection(web, url, kind):
    origin, hits = web
    port = origin.rsplit(":", 1)[1]
    with pytest.raises(ValueError, match=f"is a {kind} address; set AGENT_HTTP_ALLOW"):
        await fetch(make_http_fetch(), url=url.format(port=port))
    assert hits == []


@pytest.mark.parametrize(
    ("host", "carried"),
    [
        ("2002:7f00:1::", "a loopback address inside: it carries 127.0.0.1"),
        ("2002:a9fe:a9fe::1", "a link-local address inside: it carries 169.254.169.254"),
        ("2002:c0a8:101::", "a private address inside: it carries 192.168.1.1"),
        ("64:ff9b::7f00:1", "a reserved address"),
        ("::127.0.0.1", "a reserved address"),
        ("::ffff:0:7f00:1", "a reserved address"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a private address"),
    ],
    ids=["6to4-loopback", "6to4-metadata", "6to4-private", "nat64", "ipv4-compatible", "siit", "teredo"],
)
async def test_an_ipv6_address_carrying_a_private_ipv4_one_is_refused(web, host, carried):
    origin, hits = web
    port = origin.rsplit(":", 1)[1]
    with pytest.raises(ValueError, match=f"^refused to fetch .* is {re.escape(carried)}; set AGENT_HTTP_ALLOW"):
        await fetch(make_http_fetch(), url=f"http://[{host}]:{port}/sized")
    assert hits == []


def test_an_ipv6_address_carrying_a_public_ipv4_one_is_judged_public():
    assert AddressPolicy().refusal("x", parse_address("2002:5db8:d822::1")) is None


async def test_a_hostname_resolving_to_a_private_address_is_refused(monkeypatch):
    fake_dns(monkeypatch, {"intranet.example": [["10.1.2.3"]]})
    with pytest.raises(ValueError, match=r"intranet.example \(it resolves to 10.1.2.3\): 10.1.2.3 is a private"):
        await fetch(make_http_fetch(), url="https://intranet.example/admin")


async def test_one_private_address_among_public_ones_refuses_the_host(monkeypatch):
    fake_dns(monkeypatch, {"mixed.example": [["93.184.216.34", "127.0.0.1"]]})
    with pytest.raises(ValueError, match="127.0.0.1 is a loopback address"):
        await fetch(make_http_fetch(), url="http://mixed.example/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https URLs can be fetched, got scheme 'file'"),
        ("ftp://example.com/x", "got scheme 'ftp'"),
        ("example.com/page", "got scheme none"),
        ("http:///nohost", "the URL has no host"),
    ],
)
async def test_urls_that_are_not_http_are_refused_with_a_reason(url, message):
    with pytest.raises(ValueError, match=message):
        await fetch(make_http_fetch(), url=url)


async def test_max_bytes_must_be_within_the_configured_ceiling():
    tool = make_http_fetch(max_bytes=1000)
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="max_bytes must be between 1 and 1,000"):
            await fetch(tool, url="http://example.com/", max_bytes=bad)


async def test_an_allowed_local_server_streams_with_progress_per_chunk(web):
    origin, hits = web
    with recorded_progress() as records:
        text = await fetch(make_http_fetch(allow=["127.0.0.1"]), url=f"{origin}/sized")

    assert text.startswith(f"status: 200 OK\nurl: {origin}/sized\ncontent-type: text/plain")
    assert f"size: {CHUNK * CHUNKS:,} bytes\n" in text and "truncated" not in text
    assert text.endswith("x" * CHUNK * CHUNKS)
    fractions = [r["progress"] for r in records]
    assert len(fractions) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert records[-1]["message"] == f"{CHUNK * CHUNKS:,} of {CHUNK * CHUNKS:,} bytes"
    assert hits == ["/sized"]


async def test_without_a_length_progress_has_no_fraction_but_counts_bytes(web):
    origin, _ = web
    with recorded_progress() as records:
        await fetch(make_http_fetch(allow=["127.0.0.1/32"]), url=f"{origin}/unsized")
    assert records and all(r["progress"] is None for r in records)
    assert records[-1]["message"] == f"{CHUNK * CHUNKS:,} bytes so far"


async def test_the_byte_limit_stops_an_endless_body_and_says_so(web):
    """If the limit were not enforced while streaming, this would read until GUARD_S."""
    origin, _ = web
    tool = make_http_fetch(allow=["127.0.0.1"], max_bytes=200_000)
    with recorded_progress() as records:
        text = await fetch(tool, url=f"{origin}/endless", max_bytes=50_000)
    assert "size: 50,000 bytes (truncated at the byte limit)" in text
    assert text.endswith("x" * 50_000 + "\n[… truncated]")
    assert records[-1]["message"] == "stopped at the 50,000-byte limit"


async def test_a_compressed_body_is_decoded_and_its_decoded_size_counted(web):
    origin, _ = web
    tool = make_http_fetch(allow=["127.0.0.1"])
    text = await fetch(tool, url=f"{origin}/compressed")
    assert f"size: {CHUNK * CHUNKS:,} bytes\n" in text and text.endswith("y" * CHUNK * CHUNKS)
    cut = await fetch(tool, url=f"{origin}/compressed", max_bytes=1000)
    assert "size: 1,000 bytes (truncated at the byte limit)" in cut and cut.endswith("y" * 1000 + "\n[… truncated]")


async def test_binary_bodies_are_summarised_not_shown(web):
    origin, _ = web
    text = await fetch(make_http_fetch(allow=["127.0.0.1"]), url=f"{origin}/binary")
    assert text.endswith(f"[binary content, {CHUNK:,} bytes not shown]")


async def test_an_unknown_charset_falls_back_to_utf8(web):
    origin, _ = web
    text = await fetch(make_http_fetch(allow=["127.0.0.1"]), url=f"{origin}/odd-charset")
    assert text.endswith("\n\nhéllo")


@pytest.mark.parametrize(
    ("target", "kind"),
    [("http://10.0.0.1/secret", "private"), ("http://169.254.169.254/latest/", "link-local")],
)
async def test_a_redirect_to_a_refused_address_is_refused(web, target, kind):
    origin, hits = web
    with pytest.raises(ValueError, match=f"is a {kind} address"):
        await fetch(make_http_fetch(allow=["127.0.0.1"]), url=f"{origin}/redirect?to={target}")
    assert hits == ["/redirect"]


async def test_allowed_redirects_are_followed_and_bounded(web):
    origin, hits = web
    tool = make_http_fetch(allow=["127.0.0.1"], max_redirects=3)
    text = await fetch(tool, url=f"{origin}/redirect?to=/host")
    assert text.startswith(f"status: 200 OK\nurl: {origin}/host\n")
    with pytest.raises(ValueError, match="too many redirects: more than 3"):
        await fetch(tool, url=f"{origin}/loop")
    assert hits.count("/loop") == 4


async def test_connects_to_the_vetted_address_with_the_original_host_header(web, monkeypatch):
    """The name resolves once per hop; a second, private answer (DNS rebinding) is never used."""
    origin, _ = web
    port = origin.rsplit(":", 1)[1]
    asked = fake_dns(monkeypatch, {"site.example": [["127.0.0.1"], ["10.9.9.9"]]})
    text = await fetch(make_http_fetch(allow=["127.0.0.1"]), url=f"http://site.example:{port}/host")
    assert text.endswith(f"host=site.example:{port}")
    assert asked == ["site.example"]


async def test_an_allowed_host_name_may_resolve_to_a_private_address(web, monkeypatch):
    origin, _ = web
    port = origin.rsplit(":", 1)[1]
    fake_dns(monkeypatch, {"dev.internal": [["127.0.0.1"]]})
    text = await fetch(make_http_fetch(allow=["dev.internal"]), url=f"http://dev.internal:{port}/host")
    assert text.endswith(f"host=dev.internal:{port}")


def test_policy_parses_hosts_addresses_and_networks():
    policy = AddressPolicy.parse(["127.0.0.1", "[::1]", "10.0.0.0/8", " Intranet.Example ", ""])
    assert policy.hosts == {"intranet.example"}
    assert policy.refusal("10.200.0.1", parse_address("10.200.0.1")) is None
    assert policy.refusal("x", parse_address("::1")) is None
    assert "private" in policy.refusal("192.168.1.1", parse_address("192.168.1.1"))
    assert policy.refusal("example.com", parse_address("93.184.216.34")) is None
    assert parse_address("fe80::1%eth0").is_link_local


def test_settings_read_the_allow_list_as_comma_separated_text(monkeypatch):
    monkeypatch.setenv("AGENT_HTTP_ALLOW", "127.0.0.1, ::1,10.0.0.0/8")
    assert Settings(checkpoint_url="memory://").http_allow == ("127.0.0.1", "::1", "10.0.0.0/8")


async def test_through_the_graph_progress_events_arrive_and_the_tool_is_in_the_network_group(web):
    origin, _ = web
    model = ScriptedModel(replies=[calls(("http_fetch", {"url": f"{origin}/sized"})), Reply(text="ok")])
    settings = Settings(checkpoint_url="memory://", system_prompt="", http_allow=("127.0.0.1",))
    graph = build_graph(model, checkpointer=InMemorySaver(), settings=settings)
    config = {"configurable": {"thread_id": "fetch"}}
    async with asyncio.timeout(GUARD_S):
        events = [e async for e in stream(graph, {"messages": [HumanMessage("get it")]}, config)]

    types = [e.type for e in events if e.name == "http_fetch"]
    assert types[:2] == ["tool_call", "tool_start"] and types[-2:] == ["tool_result", "tool_complete"]
    fractions = [e.progress for e in events if e.type == "tool_progress"]
    assert len(fractions) >= 2 and fractions[-1] == 1.0
    tool = next(t for t in graph.get_graph().nodes["tools"].data.tools_by_name.values() if t.name == "http_fetch")
    assert spec_of(tool).concurrency_group == "network"


@asynccontextmanager
async def tls_server(ca: trustme.CA, name: str) -> AsyncIterator[tuple[int, list[str | None]]]:
    """A one-route HTTPS server on 127.0.0.1 with a certificate for ``name``; it answers
    ``host=<Host header>`` and records the TLS server name (SNI) each client sent."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    server_names: list[str | None] = []
    context.sni_callback = lambda _sock, server_name, _ctx: server_names.append(server_name)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        host = next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("host:"))
        body = f"host={host}".encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], server_names
    finally:
        server.close()
        await server.wait_closed()


async def test_https_to_the_vetted_address_keeps_the_server_name_for_sni_and_verification(monkeypatch):
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    fake_dns(monkeypatch, {"secure.example": [["127.0.0.1"]]})
    tool = make_http_fetch(allow=["127.0.0.1"], verify=client_context)
    async with tls_server(ca, "secure.example") as (port, server_names):
        text = await fetch(tool, url=f"https://secure.example:{port}/")
    assert text.startswith(f"status: 200 OK\nurl: https://secure.example:{port}/\n")
    assert text.endswith(f"host=secure.example:{port}")
    assert server_names == ["secure.example"]


async def test_https_refuses_a_certificate_for_another_name(monkeypatch):
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    fake_dns(monkeypatch, {"secure.example": [["127.0.0.1"]]})
    tool = make_http_fetch(allow=["127.0.0.1"], verify=client_context)
    async with tls_server(ca, "other.example") as (port, _):
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(tool, url=f"https://secure.example:{port}/")


async def test_a_server_that_never_answers_times_out_with_a_clear_error():
    accepted = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        tool = make_http_fetch(allow=["127.0.0.1"], timeout_s=0.2)
        with pytest.raises(TimeoutError, match=rf"fetching http://127.0.0.1:{port}/ took longer than 0.2 s"):
            await fetch(tool, url=f"http://127.0.0.1:{port}/")
        assert accepted.is_set()
    finally:
        server.close()
        await server.wait_closed()
