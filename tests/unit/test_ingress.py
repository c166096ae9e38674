"""The service's ingress rules without a server: ids, text, which hosts are answered, 422 bodies."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from agent_ng.service.hosts import allowed_hosts, host_name, matches
from agent_ng.service.inputs import SHOWN_CHARS, SHOWN_ERRORS, Id, Text, validation_error
from agent_ng.service.settings import ServiceSettings


@pytest.mark.parametrize("value", ["t1", "a.b_c:d-e", "0" * 128, "550e8400-e29b-41d4-a716-446655440000"])
def test_an_id_is_letters_digits_and_dot_underscore_colon_dash(value):
    assert TypeAdapter(Id).validate_python(value) == value


@pytest.mark.parametrize("value", ["t1\n", "\nt1", "t 1", "", ".t1", "0" * 129, "t1\r", "é"])
def test_any_other_id_is_refused_saying_the_rule(value):
    with pytest.raises(ValidationError, match="an id is 1 to 128"):
        TypeAdapter(Id).validate_python(value)


def test_a_lone_surrogate_is_not_text_but_a_pair_is():
    assert TypeAdapter(Text).validate_python("a pair: 😀") == "a pair: 😀"
    with pytest.raises(ValidationError, match="character 3 is a lone surrogate"):
        TypeAdapter(Text).validate_python("hi \ud800")


def settings(**values) -> ServiceSettings:
    return ServiceSettings(**{"checkpoint_url": "memory://", "api_key": None, **values})


def test_by_default_the_localhost_names_and_the_bound_address_are_answered():
    assert allowed_hosts(settings(host="192.0.2.5")) == {"localhost", "127.0.0.1", "::1", "192.0.2.5"}


def test_allowed_hosts_are_read_comma_separated_and_widen_the_list(monkeypatch):
    monkeypatch.setenv("AGENT_ALLOWED_HOSTS", "Agent.Example., *.corp.example")
    allowed = allowed_hosts(ServiceSettings(checkpoint_url="memory://", api_key=None))
    assert allowed == {"localhost", "127.0.0.1", "::1", "agent.example", "*.corp.example"}
    assert allowed_hosts(settings(allowed_hosts="*")) is None


@pytest.mark.parametrize("bound", ["0.0.0.0", "::"])
def test_bound_to_every_interface_any_host_needs_the_key(bound):
    keyless = allowed_hosts(settings(host=bound))
    assert keyless is not None and {"localhost", socket.gethostname()} <= keyless
    assert allowed_hosts(settings(host=bound, api_key="k")) is None
    assert "evil.example" not in allowed_hosts(settings(host=bound, api_key="k", allowed_hosts="a.example"))


@pytest.mark.parametrize(
    ("header", "name"),
    [("LocalHost:8000", "localhost"), ("[::1]:8000", "::1"), ("::1", "::1"), ("fe80::1", "fe80::1"), ("example.com.", "example.com"), ("[::1", ""), ("", "")],
)
def test_a_host_header_names_a_lower_case_host_without_port(header, name):
    assert host_name(header) == name


def test_a_wildcard_matches_subdomains_only():
    allowed = frozenset({"*.corp.example"})
    assert matches("a.corp.example", allowed) and matches("a.b.corp.example", allowed)
    assert not matches("corp.example", allowed) and not matches("evilcorp.example", allowed)


def test_a_422_keeps_loc_msg_and_type_cut_short_and_few():
    errors = [
        {"loc": ("body", "k" * 1000), "msg": "m" * 1000, "type": "extra_forbidden", "input": "x" * 1000, "ctx": {"a": 1}}
    ] * (SHOWN_ERRORS + 5)
    response = asyncio.run(validation_error(None, RequestValidationError(errors)))  # type: ignore[arg-type]
    detail = json.loads(response.body)["detail"]
    assert response.status_code == 422 and len(detail) == SHOWN_ERRORS + 1
    assert detail[0] == {"loc": ["body", "k" * (SHOWN_CHARS - 1) + "…"], "msg": "m" * (SHOWN_CHARS - 1) + "…", "type": "extra_forbidden"}
    assert detail[-1] == {"loc": [], "msg": "and 5 more errors", "type": "too_many_errors"}
