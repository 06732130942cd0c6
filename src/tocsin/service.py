"""The running service: store, sender and dispatcher wired together for the CLI.

`Tocsin` builds one process's parts and its operations `Context` (tocsin.app), which is
all the API hands its routes; it starts and stops the parts.
"""

from __future__ import annotations

from tocsin import events, ids, retention
from tocsin.app import Context, PrincipalCache
from tocsin.clock import Clock, SystemClock
from tocsin.config import Settings
from tocsin.crypto import Vault
from tocsin.delivery import Dispatcher, Sender
from tocsin.evaluation import TriggerConsumer
from tocsin.metrics import Metrics
from tocsin.models import NewEvent
from tocsin.ratelimit import RateLimiter
from tocsin.scheduler import Scheduler
from tocsin.store import AutoDisabled, Bootstrap, Store

__all__ = ["PrincipalCache", "Tocsin"]


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
            audit_auto_disabled=self._auto_disabled,
            metrics=self.metrics,
        )
        self.scheduler = Scheduler(
            [
                retention.prune_job(
                    store,
                    self.clock,
                    owner=self.dispatcher.owner,
                    retention_days=settings.retention_days,
                )
            ]
        )
        self.context = Context(
            settings=settings,
            store=store,
            vault=vault,
            clock=self.clock,
            sender=self.sender,
            dispatcher=self.dispatcher,
            metrics=self.metrics,
            principals=self.principals,
            ingest_limiter=self.ingest_limiter,
        )
        consumer = TriggerConsumer(store, self.clock, self.context.notify_settings)
        self.scheduler.add(consumer.job())

    async def start(self, *, deliver: bool = True) -> str | None:
        """Migrate, bootstrap an empty database, start delivering.

        Returns the administrator token when this start created it.
        """
        await self.store.migrate()
        token = await self.bootstrap()
        if deliver:
            await self.dispatcher.start()
            await self.scheduler.start()
        return token

    async def stop(self) -> None:
        await self.scheduler.stop()
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

    def _auto_disabled(self, found: AutoDisabled) -> list[NewEvent]:
        """The system notification of an integration the store auto-disables (pure)."""
        event = events.auto_disabled_event(
            found.integration,
            self.context.notify_settings(found.client),
            requests=found.requests,
            failures=found.failures,
            window_seconds=found.window_seconds,
            now=self.clock.now(),
        )
        return [event]
