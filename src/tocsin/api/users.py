"""/users and /tokens: who may call the API, with which role, through which tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tocsin.api.deps import Ctx, JsonRoute, Manager, Reader
from tocsin.api.schemas import TokenCreated, TokenIn, TokenOut, UserChange, UserIn, UserOut
from tocsin.app import accounts

users = APIRouter(prefix="/users", tags=["users"], route_class=JsonRoute)
tokens = APIRouter(prefix="/tokens", tags=["tokens"], route_class=JsonRoute)


@users.post("", status_code=201, response_model=UserOut)
async def create_user(body: UserIn, ctx: Ctx, caller: Manager) -> UserOut:
    user = await accounts.create_user(ctx, caller, email=body.email, name=body.name, role=body.role)
    return UserOut.of(user)


@users.get("", response_model=list[UserOut])
async def list_users(ctx: Ctx, caller: Reader) -> list[UserOut]:
    return [UserOut.of(user) for user in await accounts.list_users(ctx, caller)]


@users.get("/{user_id}", response_model=UserOut)
async def read_user(user_id: int, ctx: Ctx, caller: Reader) -> UserOut:
    return UserOut.of(await accounts.get_user(ctx, caller, user_id))


@users.patch("/{user_id}", response_model=UserOut)
async def change_role(user_id: int, body: UserChange, ctx: Ctx, caller: Manager) -> UserOut:
    return UserOut.of(await accounts.set_role(ctx, caller, user_id, body.role))


@users.delete("/{user_id}", status_code=204)
async def delete_user(user_id: int, ctx: Ctx, caller: Manager) -> Response:
    await accounts.delete_user(ctx, caller, user_id)
    return Response(status_code=204)


@tokens.post("", status_code=201, response_model=TokenCreated)
async def create_token(body: TokenIn, ctx: Ctx, caller: Manager) -> TokenCreated:
    made = await accounts.create_token(
        ctx,
        caller,
        name=body.name or "",
        user_id=body.user_id,
        expires_at=None if body.expires_at is None else body.expires_at.timestamp(),
    )
    shown = TokenOut.of(made.token, ctx.clock.now())
    return TokenCreated(token=made.secret, **shown.model_dump())


@tokens.get("", response_model=list[TokenOut])
async def list_tokens(ctx: Ctx, caller: Manager) -> list[TokenOut]:
    now = ctx.clock.now()
    return [TokenOut.of(token, now) for token in await accounts.list_tokens(ctx, caller)]


@tokens.delete("/{token_id}", status_code=204)
async def revoke_token(token_id: int, ctx: Ctx, caller: Manager) -> Response:
    await accounts.revoke_token(ctx, caller, token_id)
    return Response(status_code=204)
