"""Integrations: the Webhook card, the list, the add/edit form, tests and switches."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tocsin.web.base import ConsoleRoute, Signed, page

router = APIRouter(prefix="/integrations", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
async def list_page(request: Request, visitor: Signed) -> Response:
    return page(request, "integrations.html", visitor=visitor, integrations=[])
