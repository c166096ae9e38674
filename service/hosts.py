"""The host names the service answers for: a request naming another ``Host`` gets a 400.

A keyless server on localhost is still reachable from any web page the user opens, through DNS
rebinding: the attacker's name resolves to 127.0.0.1, and the browser, seeing one origin, lets
the page read the answers. The ``Host`` header still carries the attacker's name, so only
requests naming this server's own hosts are answered:

- by default, the localhost names (``localhost``, ``127.0.0.1``, ``::1``) and the bound address
  (``--host`` / ``AGENT_HOST``);
- bound to every interface (``0.0.0.0`` or ``::``): any host when ``AGENT_API_KEY`` is set
  (the key is the guard), else the localhost names and the machine's own name and addresses;
- ``AGENT_ALLOWED_HOSTS`` adds names (``*.example.com`` for subdomains, ``*`` for any; when
  bound to every interface with a key, it narrows "any" to those names).

``/healthz`` answers any ``Host``: load balancers' probes name hosts as they like, and it holds
nothing. ``agent-ng serve`` says at start-up which hosts it answers (``described``).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_ng.service.settings import ServiceSettings

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
ANY = "*"
OPEN_PATHS = frozenset({"/healthz"})
REFUSED = JSONResponse(
    {
        "detail": "this server does not answer for the Host this request names; "
        "add the name to AGENT_ALLOWED_HOSTS to allow it"
    },
    status_code=400,
)


def allowed_hosts(settings: ServiceSettings) -> frozenset[str] | None:
    """The names (and ``*.`` patterns) the service answers for; ``None``: any host."""
    every_interface = settings.host in EVERY_INTERFACE
    if every_interface and settings.api_key is not None and not settings.allowed_hosts:
        return None
    bound = machine_names() if every_interface else {settings.host}
    names = {*LOCAL_NAMES, *bound, *settings.allowed_hosts}
    return None if ANY in names else frozenset(host_name(name) for name in names)


def machine_names() -> set[str]:
    """This machine's host name, its fully qualified name and the addresses they resolve to."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    return names


def described(settings: ServiceSettings) -> str:
    """The start-up line saying which hosts are answered."""
    allowed = allowed_hosts(settings)
    if allowed is None:
        return "answering any Host (AGENT_ALLOWED_HOSTS narrows it)"
    return f"answering Host {', '.join(sorted(allowed))} (AGENT_ALLOWED_HOSTS adds names)"


def host_name(host: str) -> str:
    """The name a ``Host`` header (or an allowed-hosts entry) names: lower case, no port, no
    brackets, no trailing dot; ``""`` when it names none. A bare IPv6 address (as
    ``AGENT_HOST`` gives it) is read as one, not as a name and a port."""
    host = host.strip()
    if host.count(":") > 1 and not host.startswith("["):
        host = f"[{host}]"
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""
    return name.rstrip(".")


def matches(name: str, allowed: frozenset[str]) -> bool:
    """Whether ``name`` is allowed, by name or under a ``*.domain`` pattern."""
    return name in allowed or any(
        pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in allowed
    )


class TrustedHosts:
    """Pure ASGI middleware: 400 for a request whose ``Host`` is not in ``allowed``."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        name = host_name(Headers(scope=scope).get("host", ""))
        if name and matches(name, self.allowed):
            await self.app(scope, receive, send)
        else:
            await REFUSED(scope, receive, send)
