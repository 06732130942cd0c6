"""The running service: store, sender and dispatcher wired together, shared by API and CLI."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from tocsin import events, formats, ids
from tocsin.clock import Clock, SystemClock
from tocsin.config import Settings
from tocsin.crypto import Vault
from tocsin.delivery import Dispatcher, Sender, guard
from tocsin.errors import TargetRefused
from tocsin.metrics import Metrics
from tocsin.models import Client, Integration, NewEvent, Principal
from tocsin.ratelimit import RateLimiter
from tocsin.store import AutoDisabled, Bootstrap, Store


class PrincipalCache:
    """Who holds a token, remembered for `ttl` seconds so that a sensor's every request
    does not wait on a database round trip to authenticate.

    Any change to users, tokens or clients in this process clears it, so there it takes
    effect at once; a change made by another process sharing PostgreSQL takes effect here
    within `ttl`.
    """

    def __init__(self, ttl: float, capacity: int = 10_000) -> None:
        self.ttl = ttl
        self._capacity = capacity
        self._known: dict[str, tuple[Principal, float]] = {}

    def get(self, digest: str, now: float) -> Principal | None:
        found = self._known.get(digest)
        if found is None:
            return None
        principal, seen_at = found
        expires_at = principal.token_expires_at
        if not seen_at <= now < seen_at + self.ttl or (
            expires_at is not None and now >= expires_at
        ):
            return None
        return principal

    def put(self, digest: str, principal: Principal, now: float) -> None:
        if len(self._known) >= self._capacity:
            self._known = {}
        self._known[digest] = (principal, now)

    def clear(self) -> None:
        self._known = {}


class Tocsin:
    """One tocsin process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        vault: Vault,
        clock: Clock | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.vault = vault
        self.clock = clock or SystemClock()
        self.sender = sender or Sender(allowed_networks=settings.allowed_networks, clock=self.clock)
        self.metrics = Metrics()
        self.principals = PrincipalCache(ttl=1.0)
        self.ingest_limiter = RateLimiter(settings.ingest_rate, settings.ingest_burst)
        self.dispatcher = Dispatcher(
            store,
            self.sender,
            settings,
            self.clock,
            on_auto_disabled=self._auto_disabled,
            metrics=self.metrics,
        )

    async def start(self, *, deliver: bool = True) -> str | None:
        """Migrate, bootstrap an empty database, start delivering.

        Returns the administrator token when this start created it.
        """
        await self.store.migrate()
        token = await self.bootstrap()
        if deliver:
            await self.dispatcher.start()
        return token

    async def stop(self) -> None:
        if self.dispatcher.running:
            await self.dispatcher.stop()
        await self.sender.close()
        await self.store.close()

    async def bootstrap(self) -> str | None:
        token = self.settings.admin_token or ids.api_token()
        boot = Bootstrap(
            client_name=self.settings.client_name,
            cloud=self.settings.cloud,
            console_url=self.settings.effective_console_url,
            admin_email="admin@localhost",
            admin_name="Administrator",
            token_hash=self.vault.token_digest(token),
        )
        created = await self.store.bootstrap(boot, self.clock.now())
        return token if created else None

    def notify_settings(self, client: Client) -> formats.NotifySettings:
        return formats.NotifySettings(
            client_name=client.name,
            cloud=client.cloud,
            console_url=client.console_url,
            partner_name=self.settings.partner_name,
            summary_prefix=self.settings.summary_prefix,
        )

    async def ingest(self, client: Client, new_events: Sequence[NewEvent]) -> int:
        """Store events with their outbox rows, then wake the dispatcher."""
        accepted = await self.store.ingest(client.id, new_events, self.clock.now())
        self.metrics.accepted(new_events)
        self.dispatcher.wake()
        return accepted

    async def integration_event(
        self,
        client: Client,
        kind: str,
        integration: Integration,
        actor: str,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.dispatcher.changed(integration, gone=kind in events.STOPS_SENDING)
        event = events.integration_event(
            kind,
            integration,
            self.notify_settings(client),
            actor=actor,
            now=self.clock.now(),
            extra=extra,
        )
        await self.ingest(client, [event])

    async def _auto_disabled(self, disabled: Sequence[AutoDisabled]) -> None:
        for found in disabled:
            client = await self.store.get_client(found.integration.client_id)
            if client is None:
                continue
            extra: dict[str, object] = {
                "failure_rate": round(found.failures / found.requests, 3),
                "requests": found.requests,
                "failures": found.failures,
                "window_seconds": found.window_seconds,
                "reason": found.integration.disabled_reason,
            }
            await self.integration_event(
                client, "integration_auto_disabled", found.integration, "system", extra
            )

    async def check_target(self, url: str) -> None:
        """Refuse a target the deployment does not allow (scheme, or where its name resolves)."""
        parts = urlsplit(url)
        if parts.scheme != "https" and not self.settings.allow_http:
            raise TargetRefused("url must use https:// (this deployment does not allow http://)")
        host = parts.hostname or ""
        allowed = self.settings.allowed_networks
        guard.check_address(host, allowed)
        if guard.literal_address(host) is None:
            await _check_name(host, parts.port or 443, allowed)


async def _check_name(host: str, port: int, allowed: Sequence[guard.Network]) -> None:
    """Refuse a name resolving to a refused address; one that does not resolve yet passes."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), 5)
    except (OSError, TimeoutError, UnicodeError):
        return
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if why := guard.refusal(address, allowed):
            raise TargetRefused(
                f"target refused: {host} resolves to {why}; TOCSIN_ALLOWED_NETWORKS can allow it"
            )
