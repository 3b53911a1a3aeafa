"""Where a webhook may be POSTed: the URL policy, and the one address it is sent to.

A client-supplied webhook URL must not make the agent POST into its own
network (a cloud metadata endpoint, an admin port on loopback). Checking the
URL and then letting the HTTP client resolve the name again is not enough: a
DNS-rebinding resolver answers a public address to the check and 127.0.0.1 to
the client. So the name is resolved once per delivery, every address must pass
the policy, and the POST connects to that address (the original host still
goes in `Host` and, for https, in SNI and the certificate check).

Non-public means loopback, private, link-local, shared, reserved, multicast or
unspecified, also when an IPv6 address carries such an IPv4 inside it:
IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4 (2002::/16),
Teredo (2001::/32, server and client) and NAT64 (64:ff9b::/96, 64:ff9b:1::/48).
Nothing here logs a URL: webhook paths and queries are often secrets themselves.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Local-use NAT64 (RFC 8215): translates into the operator's own network.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def _not_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        not addr.is_global
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local)
    )


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries in one of the transition forms."""
    found: list[ipaddress.IPv4Address] = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    value = int(addr)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible (::a.b.c.d); not :: or ::1
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)
    if addr in _NAT64:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return found


def is_public(text: str) -> bool:
    """True for a public unicast address (and nothing non-public inside it)."""
    try:
        addr = ipaddress.ip_address(text.split("%", maxsplit=1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return not _not_public(addr)
    if addr in _LOCAL_NAT64:
        return False
    inner = embedded_ipv4(addr)
    if inner:
        return not any(_not_public(v4) for v4 in inner)
    return not _not_public(addr)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    """A webhook URL bound to the one address its POST connects to."""

    url: str  # the URL with the address in place of the host name
    headers: dict[str, str]  # Host: the original name
    extensions: dict[str, Any]  # sni_hostname for https


class WebhookPolicy:
    """Resolves a webhook URL once and decides whether it may be POSTed to."""

    def __init__(self, *, allow_private: bool = False, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self._resolve = resolver

    async def target(self, url: str) -> Target | None:
        """The address to POST to, or None when the URL is refused (never raises)."""
        target = await self._target(url, unresolved_ok=False)
        return target if isinstance(target, Target) else None

    async def _target(self, url: str, *, unresolved_ok: bool) -> Target | bool | None:
        """As `target`; True for a name that does not resolve when `unresolved_ok`."""
        try:
            parsed = urllib.parse.urlsplit(url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError:
            return None
        host = parsed.hostname
        if parsed.scheme not in ("http", "https") or not host:
            return None
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await self._resolve(host, port)
            except socket.gaierror:
                return True if unresolved_ok else None
            except OSError:
                return None
        if not addresses:
            return None
        if not self.allow_private and not all(is_public(a) for a in addresses):
            return None
        address = addresses[0].split("%", maxsplit=1)[0]
        literal = f"[{address}]" if ":" in address else address
        netloc = f"{literal}:{parsed.port}" if parsed.port else literal
        userinfo, at, host_header = parsed.netloc.rpartition("@")
        if at:
            netloc = f"{userinfo}@{netloc}"
        pinned = urllib.parse.urlunsplit(
            (parsed.scheme, netloc, parsed.path or "/", parsed.query, "")
        )
        extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
        return Target(pinned, {"Host": host_header}, extensions)

    async def validate(self, url: str) -> bool:
        """The check at registration (the SDK's push_url_validator); delivery checks again.

        A name that does not resolve now is taken: it shows no private address, DNS
        may not know it yet (or not from this host), and every delivery resolves it
        again and refuses what is not public."""
        return await self._target(url, unresolved_ok=True) is not None
