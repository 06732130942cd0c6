"""Deployment settings. Every option has a command-line flag and a TOCSIN_* twin (cli.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from tocsin.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DATABASE_URL = "sqlite:///./tocsin.db"
MIN_RETENTION_DAYS = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything an operator can set, with the defaults of SPEC 6.1."""

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8080
    client_name: str = "tocsin"
    cloud: str = "local"
    console_url: str = ""
    partner_name: str = "tocsin"
    summary_prefix: str = "[Wallarm]"
    allow_http: bool = False
    allowed_networks: tuple[Network, ...] = ()
    admin_token: str | None = None
    operator_token: str | None = None  # deployment-wide: manages clients (/api/v1/clients)
    ingest_rate: float = 100_000.0  # events per second per token; 0 = no limit
    ingest_burst: float = 200_000.0
    secret_key: str | None = None
    max_batch: int = 500
    max_in_flight: int = 4
    lease_margin: float = 10.0
    poll_interval: float = 0.5
    sqlite_synchronous: str = "FULL"
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 64 * 1024  # the request line and headers, 431 past it
    max_header_count: int = 100
    header_timeout: float = 10.0  # seconds to receive a request line and headers
    deliver: bool = True  # serve without delivery workers (PostgreSQL, `tocsin dispatch` delivers)
    retention_days: float = 30.0  # the delivery log, events and expired denylist entries
    # Mark console cookies Secure even over plain http (TLS ends at a proxy in front).
    console_secure_cookies: bool = False

    def __post_init__(self) -> None:
        # Shorter would prune attempts that the 12-hour auto-disable rule still counts.
        if self.retention_days < MIN_RETENTION_DAYS:
            raise ConfigError(
                f"TOCSIN_RETENTION_DAYS must be at least {MIN_RETENTION_DAYS:g} "
                f"(got {self.retention_days:g})"
            )

    @property
    def effective_console_url(self) -> str:
        return self.console_url or f"http://{self.host}:{self.port}"


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, 127.0.0.1` -> networks; a clear error names the bad entry."""
    networks: list[Network] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"TOCSIN_ALLOWED_NETWORKS: {entry!r} is not a CIDR such as 10.0.0.0/8"
            ) from exc
    return tuple(networks)


def sqlite_path(database_url: str) -> Path | None:
    """The file of a `sqlite:///path` URL, None for other databases."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        if database_url.startswith("sqlite:"):
            raise ConfigError(
                f"database URL {database_url!r}: write sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        return None
    rest = database_url[len(prefix) :]
    if not rest:
        raise ConfigError("database URL names no file: write sqlite:///./tocsin.db")
    return Path(rest)
