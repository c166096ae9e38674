"""Hostile requests against the real ``agent-ng serve``: what a request may do before and while it is read.

Each case sends what an attacker (or an unlucky client) would, and asserts the answer, that the
server's memory did not grow with the body, and that ``/healthz`` answered within its budget
while it ran. Big bodies come from generators, so this process never holds them whole.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.hostile import HealthWatch, Server, agent_serve

MB = 1 << 20
KEY = "s3cret"
ANSWER_BUDGET_S = 3.0
"""How long a refused body may take to be answered (it took 9 to 148 s when read whole)."""
RSS_BUDGET = 50 * MB
"""How much the server may grow while refusing a body (it grew 600 MB to 1.2 GB)."""
CLIENT_TIMEOUT_S = 30


def json_body(size: int, chunk: int = MB) -> Iterator[bytes]:
    """A run request of exactly ``size`` bytes, made as it is sent: a question and a long array
    of zeros, the costliest JSON to parse per byte (one object each two bytes)."""
    head, tail = b'{"input": "hi", "pad": [0', b"]}"
    left = size - len(head) - len(tail)
    yield head
    while left > 0:
        n = min(chunk, left)
        yield b",0" * (n // 2) + b" " * (n % 2)
        left -= n
    yield tail


def post_big(server: Server, size: int, *, declared: bool, key: str | None = None) -> tuple[httpx.Response, float, int]:
    """POST a ``size``-byte question (with a ``Content-Length`` or chunked); the answer, its
    time and the server's RSS growth."""
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(size)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    rss = server.rss_bytes()
    started = time.perf_counter()
    r = httpx.post(
        f"{server.url}/threads/t1/runs/stream",
        content=json_body(size),
        headers=headers,
        timeout=CLIENT_TIMEOUT_S,
    )
    return r, time.perf_counter() - started, server.rss_bytes() - rss


@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), (KEY, 413)], ids=["no-key-401", "key-413"]
)
def test_a_100_mb_body_with_its_length_declared_is_answered_before_it_is_read(tmp_path, key, status):
    with agent_serve(tmp_path, env={"AGENT_API_KEY": KEY}) as server, HealthWatch(server.url) as health:
        r, took, grew = post_big(server, 100 * MB, declared=True, key=key)

    assert r.status_code == status, r.text[:200]
    assert took < ANSWER_BUDGET_S, f"answered after {took:.1f} s"
    assert grew < RSS_BUDGET, f"the server grew {grew / MB:.0f} MB"
    health.assert_responsive()


@pytest.mark.parametrize("size", [20 * MB, 100 * MB], ids=["20MB", "100MB"])
def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(tmp_path, size):
    with agent_serve(tmp_path) as server, HealthWatch(server.url) as health:
        r, took, grew = post_big(server, size, declared=False)

    assert r.status_code == 413, r.text[:200]
    assert "limit is 1,000,000" in r.json()["detail"]
    assert took < ANSWER_BUDGET_S, f"answered after {took:.1f} s"
    assert grew < RSS_BUDGET, f"the server grew {grew / MB:.0f} MB"
    health.assert_responsive()


LONG = "MARK" * 200_000
AGUI = {"threadId": "t1", "runId": "r1", "state": {}, "tools": [], "context": [], "forwardedProps": {}}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/threads/t1/runs/stream", {"input": [LONG]}),
        ("/threads/t1/runs/stream", {"input": "hi", "config": {"tags": LONG}}),
        ("/threads/t1/runs/stream", {"input": "hi", "on_disconnect": LONG}),
        ("/threads/t1/runs/stream", {"input": "hi", LONG: 1}),
        ("/threads/t1/runs/stream", {"input": "hi"} | {f"MARK{i}": i for i in range(2_000)}),
        ("/agui", AGUI | {"messages": [{"id": "m", "role": LONG, "content": "hi"}]}),
    ],
    ids=["wrong-type", "nested", "bad-literal", "long-extra-key", "many-errors", "agui-role"],
)
def test_a_validation_error_never_echoes_the_body(tmp_path, path, body):
    with agent_serve(tmp_path) as server, HealthWatch(server.url) as health:
        r = httpx.post(f"{server.url}{path}", json=body, timeout=CLIENT_TIMEOUT_S)

    assert r.status_code == 422
    assert "MARK" * 30 not in r.text and len(r.content) < 4_000, r.text[:300]
    assert all({"loc", "msg", "type"} == set(d) for d in r.json()["detail"]), r.text
    health.assert_responsive()


def test_a_lone_surrogate_in_the_question_is_refused_and_the_thread_stays_as_it_was(tmp_path):
    lone = '"hi \\ud800 there"'  # JSON's escape of an unpaired UTF-16 half: valid JSON, not text
    requests = [
        ("/threads/t1/runs/stream", f'{{"input": {lone}}}', ["body", "input"]),
        ("/threads/t1/runs", f'{{"input": {lone}}}', ["body", "input"]),
        (
            "/agui",
            json.dumps(AGUI)[:-1] + f', "messages": [{{"id": "m1", "role": "user", "content": {lone}}}]}}',
            ["body", "messages"],
        ),
        (
            "/threads/t1/runs",
            f'{{"input": "hi", "config": {{"tags": [{lone}]}}}}',
            ["body", "config", "tags", 0],
        ),
    ]
    with agent_serve(tmp_path) as server, HealthWatch(server.url) as health, httpx.Client(
        base_url=server.url, timeout=CLIENT_TIMEOUT_S
    ) as c:
        with c.stream("POST", "/threads/t1/runs/stream", json={"input": "first"}) as first:
            assert '"run_end"' in first.read().decode()
        before = c.get("/threads/t1").json()
        answers = [
            c.post(path, content=body, headers={"Content-Type": "application/json"})
            for path, body, _ in requests
        ]
        after = c.get("/threads/t1").json()

    for (path, _, where), r in zip(requests, answers, strict=True):
        assert r.status_code == 422, (path, r.status_code, r.text[:200])
        [error] = [d for d in r.json()["detail"] if d["loc"] == where]
        assert "surrogate" in error["msg"], error
    assert after == before
    health.assert_responsive()


NEWLINE_ID_REQUESTS = [
    ("POST", "/threads/t1%0A/runs/stream", {"input": "hi"}),
    ("POST", "/threads/t1%0A/runs", {"input": "hi"}),
    ("GET", "/threads/t1%0A", None),
    ("GET", "/threads/t1%0A/history", None),
    ("DELETE", "/threads/t1%0A", None),
    ("POST", "/agui", AGUI | {"threadId": "t1\n", "messages": [{"id": "m", "role": "user", "content": "hi"}]}),
    ("POST", "/agui", AGUI | {"runId": "r1\n", "messages": [{"id": "m", "role": "user", "content": "hi"}]}),
]
NEWLINE_RUN_ID_REQUESTS = [
    ("GET", "/threads/t1/runs/r1%0A/stream", None),
    ("POST", "/threads/t1/runs/r1%0A/cancel", None),
]


@pytest.mark.parametrize(
    "requests", [NEWLINE_ID_REQUESTS, NEWLINE_RUN_ID_REQUESTS], ids=["thread-and-agui-ids", "run-ids"]
)
def test_an_id_with_a_trailing_newline_is_refused_on_every_route(tmp_path, requests):
    with agent_serve(tmp_path) as server, HealthWatch(server.url) as health, httpx.Client(
        base_url=server.url, timeout=CLIENT_TIMEOUT_S
    ) as c:
        answers = [c.request(method, path, json=body) for method, path, body in requests]
        threads = c.get("/threads").json()

    for (method, path, body), r in zip(requests, answers, strict=True):
        assert r.status_code == 422, (method, path, body, r.status_code, r.text[:200])
        assert any("an id is" in d["msg"] for d in r.json()["detail"]), r.text
    assert threads == []
    health.assert_responsive()


def get_as(server: Server, host: str, key: str | None = None) -> httpx.Response:
    """``GET /threads`` naming ``host`` in the ``Host`` header, as a rebound browser page would."""
    headers = {"Host": host} | ({"Authorization": f"Bearer {key}"} if key else {})
    return httpx.get(f"{server.url}/threads", headers=headers, timeout=CLIENT_TIMEOUT_S)


def test_a_keyless_server_answers_only_its_own_host_names(tmp_path):
    port = "8000"
    with agent_serve(tmp_path) as server, HealthWatch(server.url) as health:
        evil = get_as(server, f"evil.example:{port}")
        evil_ip = get_as(server, "203.0.113.7")
        ours = [get_as(server, host) for host in ("localhost", f"127.0.0.1:{port}", f"LOCALHOST:{port}")]
        healthz = httpx.get(f"{server.url}/healthz", headers={"Host": "evil.example"})

    for r in (evil, evil_ip):
        assert r.status_code == 400
        assert "AGENT_ALLOWED_HOSTS" in r.text and "\n" not in r.text.strip(), r.text
    assert [r.status_code for r in ours] == [200, 200, 200]
    assert healthz.status_code == 200
    health.assert_responsive()


def test_the_allowed_hosts_setting_widens_the_list(tmp_path):
    with agent_serve(tmp_path, env={"AGENT_ALLOWED_HOSTS": "agent.example,*.corp.example"}) as server:
        answers = {
            host: get_as(server, host).status_code
            for host in ("agent.example", "a.corp.example", "localhost", "evil.example", "corp.example.evil")
        }
    assert answers == {
        "agent.example": 200,
        "a.corp.example": 200,
        "localhost": 200,
        "evil.example": 400,
        "corp.example.evil": 400,
    }


def test_bound_to_every_interface_any_host_needs_the_api_key(tmp_path):
    machine = socket.gethostname()
    with agent_serve(tmp_path, env={"AGENT_HOST": "0.0.0.0"}) as keyless:
        open_answers = {h: get_as(keyless, h).status_code for h in ("evil.example", "localhost", machine)}
    with agent_serve(tmp_path, env={"AGENT_HOST": "0.0.0.0", "AGENT_API_KEY": KEY}) as keyed:
        keyed_answer = get_as(keyed, "evil.example", KEY).status_code
        log = (tmp_path / "serve.log").read_text()

    assert open_answers == {"evil.example": 400, "localhost": 200, machine: 200}
    assert keyed_answer == 200
    assert "any Host" in log, log


PARSE_BUDGET_S = 1.0
"""How long the costliest body under the default limit (1 MB) may hold the event loop: parsing
and validating hold the GIL, so this is bounded by the limit, not hidden in a thread."""


def costliest_bodies(limit: int = 1_000_000) -> dict[str, tuple[str, bytes]]:
    """Bodies just under ``limit`` that cost the most to parse: an AG-UI history of tiny
    messages (each validated) and a run request of tiny wrong keys (each an error)."""
    message = b'{"id":"m","role":"user","content":"x"},'
    head = json.dumps(AGUI).encode()[:-1] + b',"messages":['
    agui = head + message * ((limit - len(head) - 2) // len(message))
    keys = [b'"k%d":1' % i for i in range(limit // 10)]
    extra = b'{"input":"hi",' + b",".join(keys) + b"}"
    return {
        "agui-history": ("/agui", agui[:-1] + b"]}"),
        "wrong-keys": ("/threads/t1/runs/stream", extra[: extra.rfind(b",", 0, limit - 1)] + b"}"),
    }


@pytest.mark.parametrize("case", ["agui-history", "wrong-keys"])
def test_the_costliest_json_under_the_limit_holds_the_loop_a_bounded_time(tmp_path, case):
    path, body = costliest_bodies()[case]
    with agent_serve(tmp_path) as server, HealthWatch(server.url) as health:
        r = httpx.post(
            f"{server.url}{path}",
            content=body,
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            timeout=CLIENT_TIMEOUT_S,
        )

    assert len(body) <= 1_000_000
    assert r.status_code == (200 if case == "agui-history" else 422), r.text[:300]
    health.assert_responsive(PARSE_BUDGET_S)
