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
    # Not globally routable, and what a translator there reaches depends on how the
    # operator set it up (RFC 8215 lets it embed the IPv4 address at any RFC 6052 length):
    # refused whatever they carry. `TOCSIN_ALLOWED_NETWORKS` can name them.
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("::ffff:0:0:0/96", "IPv4-translated (RFC 2765)"),
)
REFUSED_NETWORKS: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), why) for cidr, why in _REFUSED
)
# The forms carrying an IPv4 address in their last 32 bits: NAT64 well-known (RFC 6052)
# and local-use (RFC 8215, read as its /96 form), IPv4-translated (RFC 2765), and the
# deprecated IPv4-compatible (`::/96`, but `::` and `::1`, which are IPv6's own).
_LOW_32_CARRIERS = tuple(
    ipaddress.ip_network(cidr) for cidr in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96")
)
_COMPAT = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: IPv4-mapped, -translated, -compatible,
    NAT64 (well-known and local-use), 6to4 or Teredo (its client)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    carries = any(address in network for network in _LOW_32_CARRIERS)
    if carries or (address in _COMPAT and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress, allowed: Sequence[Network] = ()) -> str | None:
    """Why the address is refused, or None when a webhook may connect to it.

    An IPv6 address carrying an IPv4 address is judged by both, the carried one first:
    `64:ff9b::a9fe:a9fe` reaches 169.254.169.254 through a translator.
    """
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if inner is not None and (why := _refused_range(inner, allowed)):
        return f"{address} carries {inner}, a {why} address"
    why = _refused_range(address, allowed)
    return None if why is None else f"{address} is a {why} address"


def _refused_range(address: IPAddress, allowed: Sequence[Network]) -> str | None:
    """What refused range the address is in, unless an allowed network holds it."""
    if _is_allowed(address, allowed):
        return None
    for network, why in REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return why
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
