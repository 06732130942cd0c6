"""Which addresses a webhook may connect to (SPEC 4 "Safety").

The checked address is the connected address: `GuardedResolver` filters what
aiohttp connects to, and IP literals (which aiohttp does not resolve) are
checked by `check_address` before the request.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from functools import lru_cache

import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tocsin.config import Network

__all__ = ["GuardedResolver", "Network", "check_address", "host_refusal", "refusal"]
from tocsin.errors import TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REFUSED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified/reserved"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("2001:db8::/32", "documentation"),
    ("100::/64", "discard"),
)
REFUSED_NETWORKS: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), why) for cidr, why in _REFUSED
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _COMPAT and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress, allowed: Sequence[Network] = ()) -> str | None:
    """Why the address is refused, or None when a webhook may connect to it."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)):
        candidates.append(inner)
    for candidate in candidates:
        if _is_allowed(candidate, allowed):
            continue
        for network, why in REFUSED_NETWORKS:
            if candidate.version == network.version and candidate in network:
                return f"{address} is a {why} address"
    return None


def _is_allowed(address: IPAddress, allowed: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in allowed)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells, however it spells it, or None for a name.

    Besides the canonical forms this reads what yarl and the C library accept as IPv4:
    `127.1`, `2130706433`, `0x7f.0.0.1`, a trailing dot, full-width dots (`127。0。0。1`).
    """
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        normalized = (yarl.URL.build(scheme="http", host=text).host or text).rstrip(".")
    except (ValueError, UnicodeError):
        normalized = text.rstrip(".")
    try:
        return ipaddress.ip_address(normalized)
    except ValueError:
        pass
    if not _LEGACY_IPV4.fullmatch(normalized):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(normalized))
    except OSError:
        return None


_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")


def check_address(text: str, allowed: Sequence[Network] = ()) -> None:
    """Raise TargetRefused if a host that is an address is refused; names go to the resolver."""
    if why := host_refusal(text, tuple(allowed)):
        raise TargetRefused(f"target refused: {why}; TOCSIN_ALLOWED_NETWORKS can allow it")


@lru_cache(maxsize=4096)
def host_refusal(host: str, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why a URL host that is an address is refused; None when it may be, or is a name.

    Cached: the sender checks a webhook's host before every request, the answer depends
    on nothing else, and parsing the host anew cost more than the rest of the check.
    """
    address = literal_address(host)
    return None if address is None else refusal(address, allowed)


class RefusedAddressError(OSError):
    """Raised inside aiohttp's connector when every resolved address is refused."""


class GuardedResolver(AbstractResolver):
    """Resolves names and drops refused addresses, so only checked ones are connected to."""

    def __init__(
        self, allowed: Sequence[Network] = (), inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = []
        reasons = []
        for result in results:
            why = refusal(ipaddress.ip_address(result["host"]), self._allowed)
            if why is None:
                kept.append(result)
            else:
                reasons.append(why)
        if not kept:
            detail = "; ".join(reasons) or "no addresses"
            raise RefusedAddressError(f"target refused: {host} resolves to {detail}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
