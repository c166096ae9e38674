"""Fetch a URL for the agent, streaming the body with progress, without becoming an SSRF hole.

The URL comes from a model, and through it from whoever wrote the prompt or the page the
model just read, so a fetch must not reach what only this machine can reach: loopback,
private networks, link-local (cloud metadata at 169.254.169.254), multicast, reserved and
unspecified addresses are refused unless ``AGENT_HTTP_ALLOW`` names them (hosts, addresses or
CIDRs, e.g. ``127.0.0.1,::1``).

Every address the host name resolves to is checked (one bad address refuses the host), and
the connection goes to the vetted address itself, with the original ``Host`` header and TLS
server name, so a second DNS answer cannot swap in another address (DNS rebinding).
Redirects are followed by hand, each hop checked the same way, at most ``max_redirects``.
Proxies from the environment are ignored for the same reason. The body is read in chunks,
each reported as progress, and reading stops at the byte limit, counted in decoded bytes: a
compressed body is decoded here a bounded step at a time (``agent_ng.tools.decoding``), not by
httpx, which inflates a whole chunk at once, so a small gzip, br or zstd bomb stops at the
limit too.

An IPv6 address that carries an IPv4 one (IPv4-mapped or -compatible, 6to4, Teredo, NAT64)
is judged by the IPv4 address as well, so ``[2002:7f00:1::]`` is as refused as ``127.0.0.1``.

    fetch = make_http_fetch(allow=["127.0.0.1"], max_bytes=100_000)
    await fetch.ainvoke({"url": "http://127.0.0.1:8000/"})
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import httpx
from langchain_core.tools import BaseTool, tool

from agent_ng.tools import progress
from agent_ng.tools.decoding import ACCEPT_ENCODING, ERRORS, decoded, decoder_for

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
DECODE_STEP = 65_536
"""Decoded bytes made at a time: what one step holds in memory and the event loop for."""
TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv")
ALLOW_HINT = "set AGENT_HTTP_ALLOW to allow it"


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which private destinations are allowed anyway: host names, and addresses by network."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AddressPolicy:
        """``["127.0.0.1", "::1", "10.0.0.0/8", "intranet.example"]`` -> a policy."""
        hosts, networks = set(), []
        for entry in (e.strip().strip("[]").lower() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why ``host`` may not be reached at ``address``, or None if it may."""
        if host in self.hosts or any(address in net for net in self.networks):
            return None
        kind = address_kind(address)
        if kind is None:
            return None
        shown = host if host == str(address) else f"{host} (it resolves to {address})"
        return f"refused to fetch {shown}: {address} is {kind}; {ALLOW_HINT}"


def address_kind(address: IPAddress) -> str | None:
    """What kind of non-public address this is (``a loopback address``), or carries
    (``a loopback address inside: it carries 127.0.0.1``, see ``embedded_ipv4``); None for a public one."""
    for judged in (address, *embedded_ipv4(address)):
        checks = (
            ("unspecified", judged.is_unspecified),
            ("loopback", judged.is_loopback),
            ("link-local", judged.is_link_local),
            ("multicast", judged.is_multicast),
            ("private", judged.is_private),
            ("reserved", judged.is_reserved),
            ("non-public", not judged.is_global),
        )
        if kind := next((kind for kind, hit in checks if hit), None):
            return f"a {kind} address" + ("" if judged is address else f" inside: it carries {judged}")
    return None


EMBEDDING_NETWORKS = tuple(
    ipaddress.IPv6Network(net) for net in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
"""Where an IPv6 address carries an IPv4 one in its last 32 bits: IPv4-compatible, -mapped,
-translated (SIIT) and the NAT64 well-known prefix. 6to4 and Teredo have ``ipaddress``'s own."""


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries, which traffic to it may reach."""
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    found = [address.sixtofour, *(address.teredo or ())]
    if any(address in net for net in EMBEDDING_NETWORKS):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return tuple(a for a in found if a is not None)


def parse_address(text: str) -> IPAddress:
    """An address from ``getaddrinfo``; IPv4-mapped IPv6 counts as the IPv4 address it maps."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def checked_url(url: str | httpx.URL) -> httpx.URL:
    """``url`` parsed, if it is an absolute http(s) URL; ValueError saying what is wrong if not."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"invalid URL {str(url)!r}: {exc}") from None
    if parsed.scheme not in SCHEMES:
        shown = f"{parsed.scheme!r}" if parsed.scheme else "none"
        raise ValueError(f"only http and https URLs can be fetched, got scheme {shown} in {url!s}")
    if not parsed.raw_host:
        raise ValueError(f"the URL has no host: {url!s}")
    return parsed


async def vetted_address(url: httpx.URL, policy: AddressPolicy) -> str:
    """Resolve ``url``'s host with the event loop's resolver; the address to connect to.

    Refuses (ValueError) when any of the addresses is not allowed, so a host cannot mix a
    public address with a private one and hope the private one gets picked.
    """
    host = url.raw_host.decode("ascii").lower()
    port = url.port or (443 if url.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(parse_address(info[4][0]) for info in infos))
    if not addresses:
        raise ValueError(f"host {host!r} resolves to no address")
    for address in addresses:
        if refusal := policy.refusal(host, address):
            raise ValueError(refusal)
    return str(addresses[0])


def is_text(content_type: str) -> bool:
    """Whether ``content_type`` is a text type; a missing one counts as text."""
    return not content_type or any(marker in content_type.lower() for marker in TEXT_TYPES)


def transfer_progress(received: int, total: int | None) -> tuple[float | None, str]:
    """``received`` bytes as a progress report: a fraction only when the length is known."""
    if total:
        return min(received / total, 1.0), f"{received:,} of {total:,} bytes"
    return None, f"{received:,} bytes so far"


async def read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the decoded body, reporting progress; and whether it was cut."""
    encoding = response.headers.get("content-encoding", "")
    decoder = decoder_for(encoding)
    length = response.headers.get("content-length", "")
    total = int(length) if length.isdigit() else None
    body = bytearray()
    try:
        async for piece in decoded(response.aiter_raw(), decoder, DECODE_STEP):
            room = limit - len(body)
            body += piece[:room]
            if len(piece) > room:
                progress.report(None, f"stopped at the {limit:,}-byte limit")
                return bytes(body), True
            progress.report(*transfer_progress(response.num_bytes_downloaded, total))
    except ERRORS as exc:
        raise ValueError(f"the body is not valid {encoding}: {exc}") from None
    return bytes(body), False


def describe(response: httpx.Response, url: httpx.URL, body: bytes, truncated: bool) -> str:
    """What the model reads: status, final URL, type and size, then the text."""
    content_type = response.headers.get("content-type", "")
    size = f"{len(body):,} bytes" + (" (truncated at the byte limit)" if truncated else "")
    head = (
        f"status: {response.status_code} {response.reason_phrase}\n"
        f"url: {url}\ncontent-type: {content_type or 'unknown'}\nsize: {size}\n\n"
    )
    if not is_text(content_type) or b"\0" in body[:1024]:
        return head + f"[binary content, {len(body):,} bytes not shown]"
    try:
        text = body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    return head + text + ("\n[… truncated]" if truncated else "")


@cache
def default_tls() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs), built once: building one takes ~0.1 s."""
    return httpx.create_ssl_context()


async def fetch(
    url: str,
    *,
    policy: AddressPolicy,
    max_bytes: int,
    timeout_s: float,
    max_redirects: int,
    verify: ssl.SSLContext | bool = True,
) -> str:
    """GET ``url`` under ``policy``; see the module docstring."""
    target = checked_url(url)
    async with httpx.AsyncClient(
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
        verify=default_tls() if verify is True else verify,
    ) as client:
        for _ in range(max_redirects + 1):
            address = await vetted_address(target, policy)
            request = client.build_request(
                "GET",
                target.copy_with(host=address),
                headers={"Host": target.netloc.decode("ascii"), "Accept-Encoding": ACCEPT_ENCODING},
                extensions={"sni_hostname": target.raw_host.decode("ascii")},
            )
            response = await client.send(request, stream=True)
            try:
                if response.has_redirect_location:
                    location = response.headers["location"]
                    progress.report(None, f"redirected ({response.status_code}) to {location}")
                    target = checked_url(target.join(location))
                    continue
                body, truncated = await read_body(response, max_bytes)
                return describe(response, target, body, truncated)
            finally:
                await response.aclose()
    raise ValueError(f"too many redirects: more than {max_redirects} fetching {url}")


def make_http_fetch(
    *,
    allow: Iterable[str] = (),
    max_bytes: int = 1_000_000,
    timeout_s: float = 20.0,
    max_redirects: int = 5,
    verify: ssl.SSLContext | bool = True,
) -> BaseTool:
    """The ``http_fetch`` tool, refusing private destinations except those in ``allow``.

    ``verify`` is httpx's: an ``ssl.SSLContext`` trusts other CAs (a company's, a test's).
    """
    policy = AddressPolicy.parse(allow)
    byte_ceiling, default_timeout = max_bytes, timeout_s

    @tool
    async def http_fetch(url: str, max_bytes: int = byte_ceiling) -> str:
        """Fetch an http(s) URL with GET and return its status, content type and text.

        Public addresses only. Reads at most `max_bytes` bytes of the body, counted after
        decompression (the text is cut there, and the result says so); follows a few redirects.
        """
        if isinstance(max_bytes, bool) or not 1 <= max_bytes <= byte_ceiling:
            raise ValueError(f"max_bytes must be between 1 and {byte_ceiling:,}, got {max_bytes!r}")
        try:
            async with asyncio.timeout(default_timeout):
                return await fetch(
                    url,
                    policy=policy,
                    max_bytes=max_bytes,
                    timeout_s=default_timeout,
                    max_redirects=max_redirects,
                    verify=verify,
                )
        except (TimeoutError, httpx.TimeoutException):
            raise TimeoutError(f"fetching {url} took longer than {default_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise ConnectionError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from None

    return http_fetch
