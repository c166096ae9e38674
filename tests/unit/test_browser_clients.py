"""What browser clients of the service need (LangGraph Studio, agent-chat-ui): CORS with
private-network preflights for the origins named, the key as ``x-api-key``, JSON sent as text."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from agent_ng.models.offline import OfflineChatModel
from agent_ng.service.app import create_app
from agent_ng.service.langgraph_server.plain_json import PlainTextJson
from agent_ng.service.settings import ServiceSettings

STUDIO = "https://smith.langchain.com"
PREFLIGHT = {
    "Origin": STUDIO,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-api-key",
    "Access-Control-Request-Private-Network": "true",
}


def client(**values) -> TestClient:
    settings = ServiceSettings(**{"checkpoint_url": "memory://", "api_key": None, **values})
    return TestClient(create_app(settings, model=OfflineChatModel(), tools=[]), base_url="http://localhost")


def test_a_named_origin_gets_its_preflight_answered_with_private_network_access():
    with client(cors_origins=STUDIO, api_key="k") as c:
        answer = c.options("/langgraph/threads", headers=PREFLIGHT)
        listed = c.get("/threads", headers={"Origin": STUDIO, "x-api-key": "k"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == STUDIO
    assert answer.headers["access-control-allow-private-network"] == "true"
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == STUDIO
    assert "content-location" in listed.headers["access-control-expose-headers"]


def test_another_origin_or_no_setting_gets_no_cors_headers():
    with client(cors_origins=STUDIO) as c:
        refused = c.options("/langgraph/threads", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    with client() as c:
        unset = c.get("/threads", headers={"Origin": STUDIO})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in unset.headers


def test_the_cors_origins_are_read_comma_separated(monkeypatch):
    monkeypatch.setenv("AGENT_CORS_ORIGINS", f"{STUDIO}, http://localhost:3000")
    assert ServiceSettings(checkpoint_url="memory://").cors_origins == (STUDIO, "http://localhost:3000")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-key": "k"}, 200),
        ({"Authorization": "Bearer k"}, 200),
        ({"x-api-key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong", "x-api-key": "k"}, 401),
        ({}, 401),
    ],
)
def test_the_key_is_taken_as_a_bearer_token_or_as_x_api_key(headers, status):
    with client(api_key="k") as c:
        assert c.get("/threads", headers=headers).status_code == status


class Body(BaseModel):
    question: str


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/langgraph/echo")
    @app.post("/echo")
    async def echo(body: Body) -> dict[str, str]:
        return {"question": body.question}

    app.add_middleware(PlainTextJson, prefix="/langgraph")
    return app


def test_json_sent_as_text_plain_is_read_as_json_under_the_prefix_only():
    c = TestClient(echo_app())
    plain = {"content-type": "text/plain;charset=UTF-8"}
    assert c.post("/langgraph/echo", content='{"question": "hi"}', headers=plain).json() == {"question": "hi"}
    assert c.post("/echo", content='{"question": "hi"}', headers=plain).status_code == 422
    bad = c.post("/langgraph/echo", content="not json", headers=plain)
    assert bad.status_code == 422
