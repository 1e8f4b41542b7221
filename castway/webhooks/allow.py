"""Which webhook receivers castway refuses to call: a URL that is not http(s), or whose
host resolves to any address inside the platform's own networks (loopback, private,
link-local with the cloud metadata endpoint, shared CGNAT, multicast, reserved,
unspecified), unless ``CASTWAY_WEBHOOK_ALLOW_PRIVATE`` (Standard Webhooks, "Server side
request forgery"). Every resolved address is checked: one internal address is enough
for a host to be refused, since the client may connect to any of them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Networks ``ipaddress`` does not flag as private but that are not the internet's.
_ALSO_INTERNAL = (ipaddress.ip_network("100.64.0.0/10"),  # RFC 6598 shared (CGNAT)
                  ipaddress.ip_network("192.0.0.0/24"),  # RFC 6890 IETF protocol
                  ipaddress.ip_network("198.18.0.0/15"))  # RFC 2544 benchmarking
MAX_URL = 2000


class RefusedReceiver(ValueError):
    """The URL may not receive webhooks; the message says why."""


def parse_url(url: str) -> tuple[str, int]:
    """Host and port of a receiver URL; raises :class:`RefusedReceiver`."""
    if len(url) > MAX_URL:
        raise RefusedReceiver(f"the URL is longer than {MAX_URL} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedReceiver("a webhook URL is http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise RefusedReceiver("a webhook URL carries no credentials: sign, don't log in")
    try:
        port = parts.port
    except ValueError:
        raise RefusedReceiver("the URL's port is not a port number") from None
    if not parts.hostname:
        raise RefusedReceiver("the URL has no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def internal(address: IPAddress) -> str | None:
    """Why ``address`` is internal (loopback, private, ...), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved",
                 "private", "site_local"):
        if getattr(address, f"is_{kind}", False):
            return kind.replace("_", "-")
    if any(address in net for net in _ALSO_INTERNAL if net.version == address.version):
        return "private"
    if not address.is_global:
        return "not global"
    return None


def refusal(addresses: Iterable[str], *, allow_private: bool) -> str | None:
    """Why a host resolving to ``addresses`` is refused, or None when it may receive."""
    found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
    if not found:
        return "the host does not resolve"
    if allow_private:
        return None
    for address in found:
        kind = internal(address)
        if kind is not None:
            return (f"the host resolves to {address}, a {kind} address "
                    "(set CASTWAY_WEBHOOK_ALLOW_PRIVATE=1 to allow it)")
    return None


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal: itself); empty when it does not."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


async def check_receiver(url: str, *, allow_private: bool) -> None:
    """Raises :class:`RefusedReceiver` unless ``url`` may receive webhooks now (checked
    at registration and again before every attempt: DNS answers change)."""
    host, port = parse_url(url)
    reason = refusal(await resolve(host, port), allow_private=allow_private)
    if reason is not None:
        raise RefusedReceiver(reason)
