"""The target guard: which resolved addresses a webhook may connect to."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tocsin.delivery import guard
from tocsin.errors import TargetRefused

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",  # noqa: S104 - an address to refuse, not one to bind
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    # IPv4-translated (RFC 2765) and local-use NAT64 (RFC 8215): refused whatever they carry
    "::ffff:0:127.0.0.1",
    "::ffff:0:a9fe:a9fe",
    "::ffff:0:8.8.8.8",
    "64:ff9b:1::a9fe:a9fe",
    "64:ff9b:1::7f00:1",
    "64:ff9b:1::808:808",
    "64:ff9b:1:ffff::1",
    # NAT64 well-known, 6to4 and Teredo carrying refused IPv4 addresses
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "2002:0a00:0001::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo client 127.0.0.1 (bits inverted)
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo client 169.254.169.254
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo client 8.8.8.8
]


@pytest.mark.parametrize("address", REFUSED)
def test_refused(address: str) -> None:
    assert guard.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_allowed(address: str) -> None:
    assert guard.refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("::ffff:0:169.254.169.254", "169.254.169.254"),
        ("::169.254.169.254", "169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b:1::a9fe:a9fe", "169.254.169.254"),
        ("2002:a9fe:a9fe::1", "169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"),
    ],
)
def test_an_embedded_ipv4_address_is_judged_by_itself(address: str, carried: str) -> None:
    inner = guard.embedded_ipv4(ipaddress.IPv6Address(address))
    assert inner == ipaddress.IPv4Address(carried)
    shown = ipaddress.ip_address(address)
    why = f"{shown} carries {carried}, a link-local (cloud metadata) address"
    assert guard.refusal(shown) == why


def test_allowed_networks_open_named_ranges() -> None:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    assert guard.refusal(ipaddress.ip_address("127.0.0.1"), loopback) is None
    assert guard.refusal(ipaddress.ip_address("::ffff:127.0.0.1"), loopback) is None
    assert guard.refusal(ipaddress.ip_address("10.0.0.1"), loopback) is not None


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.0.0.1.",
        "127。0。0。1",
        "0177.0.0.1",
        "[::ffff:7f00:1]",
    ],
)
def test_other_spellings_of_loopback_are_refused(host: str) -> None:
    with pytest.raises(TargetRefused, match="loopback"):
        guard.check_address(host)


@pytest.mark.parametrize("host", ["example.com", "deadbeef", "xn--80ak6aa92e.com", "a.b.c"])
def test_names_are_not_addresses(host: str) -> None:
    assert guard.literal_address(host) is None


def test_ip_literals_are_checked() -> None:
    with pytest.raises(TargetRefused, match="link-local"):
        guard.check_address("169.254.169.254")
    with pytest.raises(TargetRefused, match="loopback"):
        guard.check_address("[::1]")
    guard.check_address("example.com")  # names are the resolver's to check


class _Fixed(AbstractResolver):
    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = self._answers.pop(0)
        return [
            ResolveResult(hostname=host, host=ip, port=port, family=family, proto=0, flags=0)
            for ip in answer
        ]

    async def close(self) -> None:
        return None


async def test_resolver_drops_refused_addresses_and_keeps_the_rest() -> None:
    resolver = guard.GuardedResolver(inner=_Fixed(["127.0.0.1", "8.8.8.8"]))
    results = await resolver.resolve("mixed.example", 443)
    assert [result["host"] for result in results] == ["8.8.8.8"]


async def test_rebinding_second_answer_is_checked_too() -> None:
    resolver = guard.GuardedResolver(inner=_Fixed(["8.8.8.8"], ["169.254.169.254"]))
    assert [r["host"] for r in await resolver.resolve("rebind.example", 443)] == ["8.8.8.8"]
    with pytest.raises(guard.RefusedAddressError, match="link-local"):
        await resolver.resolve("rebind.example", 443)


def uncached_refusal(host: str, allowed: tuple[guard.Network, ...] = ()) -> str | None:
    """check_address's decision made the long way, with nothing remembered."""
    address = guard.literal_address(host)
    return None if address is None else guard.refusal(address, allowed)


CHECKED_HOSTS = [
    *REFUSED,
    *ALLOWED,
    "127.1",
    "2130706433",
    "0x7f.0.0.1",
    "127。0。0。1",
    "[::ffff:7f00:1]",
    "example.com",
    "deadbeef",
    "hooks.example.com.",
]
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize("allowed", [(), LOOPBACK], ids=["default", "loopback-allowed"])
def test_the_cached_decision_is_the_one_made_the_long_way(
    allowed: tuple[guard.Network, ...],
) -> None:
    for _ in range(2):  # the second round answers from the cache
        for host in CHECKED_HOSTS:
            assert guard.host_refusal(host, allowed) == uncached_refusal(host, allowed), host


def test_the_cache_keeps_decisions_apart_per_allowed_networks() -> None:
    assert guard.host_refusal("127.0.0.1") == "127.0.0.1 is a loopback address"
    assert guard.host_refusal("127.0.0.1", LOOPBACK) is None
    assert guard.host_refusal("127.0.0.1") == "127.0.0.1 is a loopback address"
    assert guard.host_refusal("127.0.0.1", LOOPBACK[1:]) == "127.0.0.1 is a loopback address"


def test_a_refused_address_is_refused_every_time_with_the_same_words() -> None:
    raised = []
    for _ in range(2):
        with pytest.raises(TargetRefused) as refused:
            guard.check_address("169.254.169.254", [])  # a list, as a caller may pass
        raised.append(refused.value)
    assert (
        str(raised[0])
        == str(raised[1])
        == (
            "target refused: 169.254.169.254 is a link-local (cloud metadata) address; "
            "TOCSIN_ALLOWED_NETWORKS can allow it"
        )
    )
    assert raised[0] is not raised[1]
    guard.check_address("127.0.0.1", list(LOOPBACK))
    guard.check_address("example.com")
