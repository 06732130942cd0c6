"""Which integrations an event notifies: the one routing rule every store applies (pure).

An integration is told of an event when it is enabled and subscribes to the event's type
(and, for a vulnerability, its risk level), unless the event is about that integration
and stops it sending (`skip_integration`). An event with `targets` (a trigger's
notification) goes to exactly those integrations that are enabled, whatever their
subscriptions. Events that do not notify (experimental hits, records kept for
triggers) go nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from tocsin.models import EventType, Integration, RiskLevel
from tocsin.store.grouping import Group


def notifies(
    integration: Integration,
    event_type: EventType,
    risk: RiskLevel | None = None,
    *,
    skip: int | None = None,
    targets: tuple[int, ...] | None = None,
) -> bool:
    """Whether an event so routed goes to `integration`."""
    if integration.id == skip or not integration.settings.enabled:
        return False
    if targets is not None:
        return integration.id in targets
    return integration.wants(event_type, risk)


def outbox_rows(
    groups: Sequence[Group], group_ids: Sequence[int], integrations: Sequence[Integration]
) -> list[tuple[int, int, int]]:
    """(integration id, group id, notification count) for every group each integration gets."""
    return [
        (integration.id, group_id, len(group.notifications))
        for group, group_id in zip(groups, group_ids, strict=True)
        if group.notify
        for integration in integrations
        if notifies(
            integration,
            group.type,
            group.risk,
            skip=group.skip_integration,
            targets=group.targets,
        )
    ]
