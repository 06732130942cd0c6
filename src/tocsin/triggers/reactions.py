"""What firings do: trigger notifications to the integrations named, denylistings. Pure.

The trigger consumer returns these in its Reaction, and the store writes them in the
transaction that moves its position, so a firing is acted on exactly once: its
notification is queued like any other (retries, batching, signing, the delivery log) and
a denylisting is stored with its own `ip_denylisted` event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tocsin import events, formats
from tocsin.models import Denylisting, EventType, NewEvent
from tocsin.triggers import notify
from tocsin.triggers.definitions import THRESHOLD_CONDITIONS, Condition, Trigger, TriggerSpec
from tocsin.triggers.evaluator import Firing, user_of

_COUNTED = {
    Condition.HITS_EXCEEDED: "hits",
    Condition.ATTACKS_EXCEEDED: "attacks",
    Condition.INCIDENTS_EXCEEDED: "incidents",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """What evaluation reads beside the stream: every trigger (disabled ones too), and per
    client how its notifications name it and its applications' names."""

    triggers: Sequence[Trigger] = ()
    settings: Mapping[int, formats.NotifySettings] = field(default_factory=dict)
    applications: Mapping[int, Mapping[int, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    events: list[tuple[int, NewEvent]]
    denylist: list[Denylisting]


def react(firings: Sequence[Firing], snapshot: Snapshot, now: float) -> Outcome:
    """The notifications and denylistings of `firings`."""
    outcome = Outcome(events=[], denylist=[])
    for firing in firings:
        trigger = firing.trigger
        settings = snapshot.settings.get(trigger.client_id)
        if settings is None:
            continue  # the client is gone
        names = snapshot.applications.get(trigger.client_id, {})
        notification = _notification(firing, settings, names)
        if notification is not None and trigger.spec.integration_ids:
            outcome.events.append((trigger.client_id, _event(trigger, notification)))
        if firing.ip is not None and trigger.spec.denylist is not None:
            outcome.denylist.append(denylisting(trigger, firing.ip, now))
    return outcome


def _event(trigger: Trigger, notification: Mapping[str, Any]) -> NewEvent:
    kind = notify.NOTIFICATION_TYPES[trigger.spec.condition]
    facts = {"kind": kind, "trigger_id": trigger.id}
    return NewEvent(
        type=EventType.TRIGGER,
        notification=formats.encode(notification),
        targets=trigger.spec.integration_ids,
        facts=orjson.dumps(facts),
    )


def _notification(
    firing: Firing, settings: formats.NotifySettings, names: Mapping[int, str]
) -> dict[str, Any] | None:
    spec = firing.trigger.spec
    condition = spec.condition
    if condition in THRESHOLD_CONDITIONS:
        return notify.threshold_notification(
            spec, observed=firing.observed, ip=firing.ip, settings=settings, application_names=names
        )
    if not firing.records:
        return None
    first = firing.records[0]
    if condition is Condition.IP_DENYLISTED:
        return _ip_blocked(spec, first, settings, names)
    if condition is Condition.USER_CREATED:
        user = {key: user_of(first).get(key) for key in ("id", "email", "name", "role")}
        actor = str(first.get("actor") or "system")
        return notify.create_user_notification(spec, user=user, actor=actor, settings=settings)
    if condition is Condition.API_CHANGES:
        changes = [_api_record(record) for record in firing.records]
        return notify.api_changes_notification(spec, changes=changes, settings=settings)
    return notify.rogue_api_notification(spec, api=_api_record(first), settings=settings)


_API_FIELDS = ("method", "domain", "path", "application")


def _api_record(facts: Mapping[str, Any]) -> dict[str, Any]:
    """An API change as notified: the endpoint and what happened to it."""
    record = {key: facts.get(key) for key in _API_FIELDS}
    if facts.get("rogue") is True:
        record["kind"] = facts.get("kind")
    else:
        record["change"] = facts.get("change")
    return record


def _ip_blocked(
    spec: TriggerSpec,
    facts: Mapping[str, Any],
    settings: formats.NotifySettings,
    names: Mapping[int, str],
) -> dict[str, Any]:
    application = facts.get("application")
    shown = names.get(application, application) if isinstance(application, int) else None
    return notify.ip_blocked_notification(
        spec,
        ip=str(facts.get("ip") or ""),
        reason=str(facts.get("reason") or ""),
        expire_at=str(facts.get("expire_at") or ""),
        application=None if shown is None else str(shown),
        settings=settings,
    )


def denylisting(trigger: Trigger, ip: str, now: float) -> Denylisting:
    """A per-IP trigger's denylisting of the address that crossed, for its lock_time."""
    spec = trigger.spec
    action, threshold = spec.denylist, spec.threshold
    lock = action.lock_time if action and action.lock_time else 0
    count = threshold.count if threshold else 0
    period = notify.period_text(threshold.period) if threshold else ""
    reason = f"more than {count} {_COUNTED.get(spec.condition, 'items')} in {period}"
    created_by = f'trigger "{spec.name}" (id {trigger.id})'
    expire_at = now + lock
    record: dict[str, Any] = {"ip": ip, "reason": reason, "application": None}
    record |= {"expire_at": notify.expire_text(expire_at), "by": created_by}
    record |= {"trigger_id": trigger.id}
    return Denylisting(
        client_id=trigger.client_id,
        ip=ip,
        reason=reason,
        expire_at=expire_at,
        created_by=created_by,
        trigger_id=trigger.id,
        event=events.record_event(EventType.IP_DENYLISTED, record),
    )
