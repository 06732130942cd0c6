"""The delivery log of an integration, and re-sending."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tocsin.api.deps import Operator, Reader, Service
from tocsin.api.schemas import AttemptOut, DeliveryOut, DeliveryPage
from tocsin.errors import NotFound
from tocsin.models import Delivery

router = APIRouter(tags=["deliveries"])


def delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        integration_id=delivery.integration_id,
        status=delivery.status.value,
        notifications=delivery.notification_count,
        attempts_count=delivery.attempt_count,
        next_attempt_at=delivery.next_attempt_at,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
        attempts=[
            AttemptOut(
                number=attempt.number,
                time=attempt.started_at,
                status_code=attempt.status_code,
                error=attempt.error,
                duration_ms=attempt.duration_ms,
                request_size=attempt.request_size,
                response_body=attempt.response_body,
            )
            for attempt in delivery.attempts
        ],
    )


@router.get("/integrations/{integration_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    integration_id: int,
    runtime: Service,
    caller: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None,
        # Ids are 64-bit database integers: a larger one would overflow the query.
        Query(ge=1, le=2**63 - 1, description="return deliveries older than this id"),
    ] = None,
) -> DeliveryPage:
    if await runtime.store.get_integration(caller.client.id, integration_id) is None:
        raise NotFound(f"integration {integration_id} not found")
    found = await runtime.store.list_deliveries(
        caller.client.id, integration_id, limit=limit, before=before
    )
    next_before = found[-1].id if len(found) == limit else None
    return DeliveryPage(items=[delivery_out(item) for item in found], next_before=next_before)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
async def read_delivery(delivery_id: int, runtime: Service, caller: Reader) -> DeliveryOut:
    found = await runtime.store.get_delivery(caller.client.id, delivery_id)
    if found is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return delivery_out(found)


@router.post("/deliveries/{delivery_id}/resend", response_model=DeliveryOut)
async def resend(delivery_id: int, runtime: Service, caller: Operator) -> DeliveryOut:
    delivery = await runtime.store.resend(caller.client.id, delivery_id, runtime.clock.now())
    runtime.dispatcher.wake()
    return delivery_out(delivery)
