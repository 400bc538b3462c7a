"""Which webhook URLs may be called: no request forgery into the platform's own network (SSRF).

In ``prod`` a URL must be ``https`` and its host must resolve only to public addresses: none
loopback, private, link-local, shared (CGNAT), multicast, reserved or unspecified, IPv4 addresses
embedded in IPv6 (mapped, 6to4, Teredo, NAT64) included. The check runs at registration and again
before every delivery, and the delivery connects to the very addresses it checked (DNS rebinding
cannot swap in another). In ``dev``/``test`` ``http`` and local receivers (``http://127.0.0.1:...``)
are allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NON_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"))
"""The IANA special-purpose blocks that are not globally reachable, named explicitly (``ipaddress``'s own view
changes between Python versions, e.g. 192.0.0.0/24)."""
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookUrlError(ValueError):
    """The URL may not be called; the message says why (shown to the caller as the ``url`` error)."""


@dataclass(frozen=True)
class Target:
    """Where a delivery connects: the URL and, in prod, the checked addresses of its host."""

    url: str
    """The registered URL."""
    host: str
    """Its host name (for ``Host`` and TLS SNI/certificate checks)."""
    port: int
    """Its port."""
    addresses: tuple[str, ...]
    """The checked addresses to connect to (empty: connect by name, dev/test)."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[IPAddress]:
    found: list[IPAddress] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_forbidden_address(address: str | IPAddress) -> bool:
    """Whether a webhook may not connect to ``address`` in prod (not a public unicast address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates.extend(_embedded_ipv4(ip))
    return any(not c.is_global or c.is_private or c.is_loopback or c.is_link_local or c.is_multicast
               or c.is_reserved or c.is_unspecified or any(c in net for net in NON_PUBLIC if net.version == c.version)
               for c in candidates)


def parse_webhook_url(url: str, *, env: str) -> SplitResult:
    """Check a URL's form (no DNS): scheme, host, no credentials or fragment; raise :class:`WebhookUrlError`."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise WebhookUrlError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"is not a valid URL ({exc})") from None
    allowed = ("https",) if env == "prod" else ("https", "http")
    if parts.scheme not in allowed:
        raise WebhookUrlError(f"must be an {' or '.join(allowed)} URL")
    if not parts.hostname:
        raise WebhookUrlError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("must not carry credentials (user:password@)")
    if parts.fragment:
        raise WebhookUrlError("must not have a #fragment")
    if port == 0:
        raise WebhookUrlError("must not use port 0")
    return parts


async def resolve(host: str, port: int) -> tuple[str, ...]:
    """Every address ``host`` resolves to (IP literals in any spelling the resolver takes, included)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookUrlError(f"host {host!r} does not resolve ({exc})") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookUrlError(f"host {host!r} does not resolve")
    return addresses


async def check_webhook_url(url: str, *, env: str) -> Target:
    """Check that a webhook may call ``url`` now; in prod resolve it and refuse any non-public address.

    Raises:
        WebhookUrlError: the URL is malformed, not https in prod, or resolves to a forbidden address.

    """
    parts = parse_webhook_url(url, env=env)
    host = str(parts.hostname)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if env != "prod":
        return Target(url=url, host=host, port=port, addresses=())
    addresses = await resolve(host, port)
    forbidden = [a for a in addresses if is_forbidden_address(a)]
    if forbidden:
        raise WebhookUrlError(f"host {host!r} resolves to a non-public address ({forbidden[0]}): loopback, "
                              "private, link-local and reserved addresses are refused")
    return Target(url=url, host=host, port=port, addresses=addresses)
