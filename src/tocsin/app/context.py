"""What every operation is given: the process's store, clock, vault, sender and dispatcher."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tocsin import formats
from tocsin.clock import Clock
from tocsin.config import Settings
from tocsin.crypto import Vault
from tocsin.delivery import Dispatcher, Sender
from tocsin.metrics import Metrics
from tocsin.models import Client, NewEvent, Principal
from tocsin.ratelimit import RateLimiter
from tocsin.store import Store

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """One process's parts, as operations use them (built by service.Tocsin)."""

    settings: Settings
    store: Store
    vault: Vault
    clock: Clock
    sender: Sender
    dispatcher: Dispatcher
    metrics: Metrics
    principals: PrincipalCache
    ingest_limiter: RateLimiter

    def notify_settings(self, client: Client) -> formats.NotifySettings:
        """How the client's notifications name it, and the deployment's partner."""
        return formats.NotifySettings(
            client_name=client.name,
            cloud=client.cloud,
            console_url=client.console_url,
            partner_name=self.settings.partner_name,
            summary_prefix=self.settings.summary_prefix,
        )

    def stored(self, new_events: Sequence[NewEvent]) -> None:
        """Events were committed: count them, and wake the dispatcher if there are any."""
        if new_events:
            self.metrics.accepted(new_events)
            self.dispatcher.wake()


class Notices(Generic[T]):
    """A change's audit renderer (store.Audit) that remembers what it rendered.

    The store calls it inside the change's transaction and ingests what it returns there;
    once the change has committed, `ctx.stored(notices.rendered)` counts those events and
    wakes the dispatcher. A retried transaction (a PostgreSQL deadlock) renders afresh.
    """

    def __init__(self, render: Callable[[T], Sequence[NewEvent]]) -> None:
        self._render = render
        self.subject: T | None = None  # what the store handed over: the object changed
        self.rendered: list[NewEvent] = []

    def __call__(self, subject: T) -> Sequence[NewEvent]:
        self.subject = subject
        self.rendered = list(self._render(subject))
        return self.rendered


def actor(caller: Principal) -> str:
    """How system notifications name the caller: `Name <email>`."""
    return f"{caller.name} <{caller.email}>" if caller.name else caller.email
