"""The pure rules the stores apply inside their transactions: who is told of an event,
and which deliveries may be re-sent (one copy each, for every store)."""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.errors import Conflict
from tocsin.models import DeliveryStatus, EventType, Integration, RiskLevel, WebhookSettings
from tocsin.store.base import check_resendable
from tocsin.store.routing import notifies


def integration(n: int = 1, **fields: Any) -> Integration:
    settings = WebhookSettings(name=f"hook{n}", url=f"https://r.test/{n}", **fields)
    return Integration(
        id=n, client_id=1, settings=settings, signing_secret="whsec_x", created_at=0, updated_at=0
    )


def test_an_integration_hears_the_events_it_subscribes_to() -> None:
    hits = integration(events=(EventType.HIT,))
    assert notifies(hits, EventType.HIT)
    assert not notifies(hits, EventType.SYSTEM)


def test_a_vulnerability_goes_where_its_risk_level_is_wanted() -> None:
    high_only = integration(events=(EventType.VULN,), vuln_risk_levels=(RiskLevel.HIGH,))
    assert notifies(high_only, EventType.VULN, RiskLevel.HIGH)
    assert not notifies(high_only, EventType.VULN, RiskLevel.LOW)


def test_an_event_about_an_integration_that_stops_it_skips_it() -> None:
    system = integration(events=(EventType.SYSTEM,))
    assert not notifies(system, EventType.SYSTEM, skip=system.id)
    assert notifies(system, EventType.SYSTEM, skip=system.id + 1)


def test_targets_name_who_is_told_whatever_they_subscribe_to() -> None:
    quiet = integration(1, events=(EventType.SYSTEM,))
    other = integration(2, events=(EventType.HIT,))
    assert notifies(quiet, EventType.HIT, targets=(1,))
    assert not notifies(other, EventType.HIT, targets=(1,))  # subscribed, but not named


def test_a_disabled_integration_is_told_nothing_even_when_named() -> None:
    off = integration(events=(EventType.HIT,), enabled=False)
    assert not notifies(off, EventType.HIT)
    assert not notifies(off, EventType.HIT, targets=(off.id,))


@pytest.mark.parametrize("status", [DeliveryStatus.FAILED, DeliveryStatus.CANCELLED])
def test_failed_and_cancelled_deliveries_may_be_re_sent(status: DeliveryStatus) -> None:
    check_resendable(status, integration_exists=True, enabled=True)  # raises nothing


@pytest.mark.parametrize(
    ("status", "exists", "enabled", "why"),
    [
        (DeliveryStatus.DELIVERED, True, True, "only failed or cancelled deliveries"),
        (DeliveryStatus.PENDING, True, True, "this one is pending"),
        (DeliveryStatus.FAILED, False, False, "the integration of this delivery was deleted"),
        (DeliveryStatus.FAILED, True, False, "enable the integration before re-sending"),
    ],
)
def test_what_may_not_be_re_sent_says_why(
    status: DeliveryStatus, exists: bool, enabled: bool, why: str
) -> None:
    with pytest.raises(Conflict, match=why):
        check_resendable(status, integration_exists=exists, enabled=enabled)
