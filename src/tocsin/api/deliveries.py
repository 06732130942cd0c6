"""The delivery log of an integration, and re-sending."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tocsin.api.deps import Ctx, Operator, Reader
from tocsin.api.schemas import AttemptOut, DeliveryOut, DeliveryPage
from tocsin.app import deliveries
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
    ctx: Ctx,
    caller: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None,
        # Ids are 64-bit database integers: a larger one would overflow the query.
        Query(ge=1, le=2**63 - 1, description="return deliveries older than this id"),
    ] = None,
) -> DeliveryPage:
    found = await deliveries.list_deliveries(
        ctx, caller, integration_id, limit=limit, before=before
    )
    next_before = found[-1].id if len(found) == limit else None
    return DeliveryPage(items=[delivery_out(item) for item in found], next_before=next_before)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
async def read_delivery(delivery_id: int, ctx: Ctx, caller: Reader) -> DeliveryOut:
    return delivery_out(await deliveries.get_delivery(ctx, caller, delivery_id))


@router.post("/deliveries/{delivery_id}/resend", response_model=DeliveryOut)
async def resend(delivery_id: int, ctx: Ctx, caller: Operator) -> DeliveryOut:
    return delivery_out(await deliveries.resend(ctx, caller, delivery_id))
