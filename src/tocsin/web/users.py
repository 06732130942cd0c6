"""Users and their API tokens: list, add, change role, delete; create (shown once), revoke."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response

from tocsin.api.schemas import TokenIn, UserChange, UserIn
from tocsin.app import accounts
from tocsin.errors import Conflict, Invalid
from tocsin.models import Role, Token
from tocsin.roles import Permission
from tocsin.web import forms
from tocsin.web.base import ConsoleRoute, Form, Signed, Visitor, context_of, page, posted, redirect

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
USER_FIELDS = ("email", "name", "role")
TOKEN_FIELDS = ("user_id", "name", "expires_at")
ROLES = (
    (Role.ADMINISTRATOR.value, "administrator — everything"),
    (Role.ANALYST.value, "analyst — read, test integrations, re-send"),
    (Role.READ_ONLY.value, "read_only — read, secrets masked"),
    (Role.API_DEVELOPER.value, "api_developer — read and report events"),
    (Role.DEPLOY.value, "deploy — report events only (sensors)"),
)
NOTICES = {
    "user-added": "User added. Create a token for them below to let them sign in.",
    "role-changed": "Role changed; it applies from their next request.",
    "user-deleted": "User deleted, with their tokens.",
    "token-revoked": "Token revoked; it stops working at once.",
}


@dataclass(frozen=True, slots=True)
class TokenShown:
    token: Token
    holder: str
    state: str


@dataclass
class Entered:
    """A submitted form's values, as typed, and each field's error."""

    values: dict[str, Any]
    errors: dict[str, str]


async def _page(
    request: Request,
    visitor: Visitor,
    *,
    user_form: Entered | None = None,
    token_form: Entered | None = None,
    new_token: accounts.NewToken | None = None,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    ctx = context_of(request)
    users = await accounts.list_users(ctx, visitor.principal)
    tokens: list[TokenShown] = []
    if visitor.can(Permission.MANAGE):
        emails = {user.id: user.email for user in users}
        now = ctx.clock.now()
        tokens = [
            TokenShown(
                token, emails.get(token.user_id, f"user {token.user_id}"), _state(token, now)
            )
            for token in await accounts.list_tokens(ctx, visitor.principal)
        ]
    return page(
        request,
        "users.html",
        visitor=visitor,
        status=status,
        users=users,
        tokens=tokens,
        roles=ROLES,
        user_form=user_form or Entered({"email": "", "name": "", "role": "analyst"}, {}),
        token_form=token_form or Entered({"user_id": "", "name": "", "expires_at": ""}, {}),
        new_token=new_token,
        problem=problem,
        notice=NOTICES.get(request.query_params.get("done", "")),
    )


def _state(token: Token, now: float) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "active" if token.active(now) else "expired"


@router.get("/users")
async def users_page(request: Request, visitor: Signed) -> Response:
    return await _page(request, visitor)


@router.post("/users")
async def add_user(request: Request, visitor: Signed) -> Response:
    form = await posted(request, visitor)
    entered = Entered({name: form.get(name).strip() for name in USER_FIELDS}, {})
    checked, entered.errors = forms.validated(UserIn, entered.values, USER_FIELDS)
    if checked is None:
        return await _page(request, visitor, user_form=entered, status=422)
    try:
        await accounts.create_user(
            context_of(request),
            visitor.principal,
            email=checked.email,
            name=checked.name,
            role=checked.role,
        )
    except Conflict as exc:
        entered.errors["email"] = str(exc)
        return await _page(request, visitor, user_form=entered, status=409)
    return redirect(request, "/users?done=user-added")


@router.post("/users/{user_id:int}/role")
async def change_role(request: Request, user_id: int, visitor: Signed) -> Response:
    form = await posted(request, visitor)
    checked, errors = forms.validated(UserChange, {"role": form.get("role")}, ("role",))
    if checked is None:
        return await _page(request, visitor, problem=f"Role: {errors['role']}", status=422)
    try:
        await accounts.set_role(context_of(request), visitor.principal, user_id, checked.role)
    except Conflict as exc:
        return await _page(request, visitor, problem=str(exc), status=409)
    return redirect(request, "/users?done=role-changed")


@router.post("/users/{user_id:int}/delete")
async def delete_user(request: Request, user_id: int, visitor: Signed) -> Response:
    await posted(request, visitor)
    try:
        await accounts.delete_user(context_of(request), visitor.principal, user_id)
    except Conflict as exc:
        return await _page(request, visitor, problem=str(exc), status=409)
    return redirect(request, "/users?done=user-deleted")


@router.post("/tokens")
async def create_token(request: Request, visitor: Signed) -> Response:
    form = await posted(request, visitor)
    entered = Entered({name: form.get(name).strip() for name in TOKEN_FIELDS}, {})
    checked, entered.errors = forms.validated(TokenIn, _token_body(form), TOKEN_FIELDS)
    if checked is None:
        return await _page(request, visitor, token_form=entered, status=422)
    try:
        made = await accounts.create_token(
            context_of(request),
            visitor.principal,
            name=checked.name or "",
            user_id=checked.user_id,
            expires_at=None if checked.expires_at is None else checked.expires_at.timestamp(),
        )
    except Invalid as exc:
        entered.errors[exc.field if exc.field in TOKEN_FIELDS else "user_id"] = str(exc)
        return await _page(request, visitor, token_form=entered, status=422)
    return await _page(request, visitor, new_token=made, status=201)


def _token_body(form: Form) -> dict[str, Any]:
    """The token form as TokenIn reads it: blanks left out."""
    body: dict[str, Any] = {}
    for name in TOKEN_FIELDS:
        value = form.get(name).strip()
        if value:
            body[name] = value
    return body


@router.post("/tokens/{token_id:int}/revoke")
async def revoke_token(request: Request, token_id: int, visitor: Signed) -> Response:
    await posted(request, visitor)
    await accounts.revoke_token(context_of(request), visitor.principal, token_id)
    return redirect(request, "/users?done=token-revoked")
