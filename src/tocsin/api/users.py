"""/users and /tokens: who may call the API, with which role, through which tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tocsin import events, ids
from tocsin.api.deps import JsonRoute, Manager, Reader, Service, actor
from tocsin.api.errors import ApiError
from tocsin.api.schemas import TokenCreated, TokenIn, TokenOut, UserChange, UserIn, UserOut
from tocsin.errors import NotFound
from tocsin.models import Principal, User
from tocsin.service import Tocsin

users = APIRouter(prefix="/users", tags=["users"], route_class=JsonRoute)
tokens = APIRouter(prefix="/tokens", tags=["tokens"], route_class=JsonRoute)


async def _user(runtime: Tocsin, caller: Principal, user_id: int) -> User:
    found = await runtime.store.get_user(caller.client.id, user_id)
    if found is None:
        raise NotFound(f"user {user_id} not found")
    return found


@users.post("", status_code=201, response_model=UserOut)
async def create_user(body: UserIn, runtime: Service, caller: Manager) -> UserOut:
    now = runtime.clock.now()
    user = await runtime.store.create_user(
        caller.client.id, email=body.email, name=body.name, role=body.role, now=now
    )
    settings = runtime.notify_settings(caller.client)
    event = events.user_event("user_created", user, settings, actor=actor(caller), now=now)
    await runtime.ingest(caller.client, [event])
    return UserOut.of(user)


@users.get("", response_model=list[UserOut])
async def list_users(runtime: Service, caller: Reader) -> list[UserOut]:
    return [UserOut.of(user) for user in await runtime.store.list_users(caller.client.id)]


@users.get("/{user_id}", response_model=UserOut)
async def read_user(user_id: int, runtime: Service, caller: Reader) -> UserOut:
    return UserOut.of(await _user(runtime, caller, user_id))


@users.patch("/{user_id}", response_model=UserOut)
async def change_role(user_id: int, body: UserChange, runtime: Service, caller: Manager) -> UserOut:
    before = await _user(runtime, caller, user_id)
    now = runtime.clock.now()
    after = await runtime.store.set_role(caller.client.id, user_id, body.role, now)
    runtime.principals.clear()
    if after is None:
        raise NotFound(f"user {user_id} not found")
    if after.role != before.role:
        event = events.user_event(
            "user_role_changed",
            after,
            runtime.notify_settings(caller.client),
            actor=actor(caller),
            now=now,
            previous_role=before.role,
        )
        await runtime.ingest(caller.client, [event])
    return UserOut.of(after)


@users.delete("/{user_id}", status_code=204)
async def delete_user(user_id: int, runtime: Service, caller: Manager) -> Response:
    now = runtime.clock.now()
    deleted = await runtime.store.delete_user(caller.client.id, user_id, now)
    runtime.principals.clear()
    if deleted is None:
        raise NotFound(f"user {user_id} not found")
    settings = runtime.notify_settings(caller.client)
    event = events.user_event("user_deleted", deleted, settings, actor=actor(caller), now=now)
    await runtime.ingest(caller.client, [event])
    return Response(status_code=204)


@tokens.post("", status_code=201, response_model=TokenCreated)
async def create_token(body: TokenIn, runtime: Service, caller: Manager) -> TokenCreated:
    now = runtime.clock.now()
    expires_at = None if body.expires_at is None else body.expires_at.timestamp()
    if expires_at is not None and expires_at <= now:
        raise ApiError(422, "invalid", "expires_at: must be in the future", "expires_at")
    user_id = caller.user_id if body.user_id is None else body.user_id
    secret = ids.api_token()
    token = await runtime.store.create_token(
        caller.client.id,
        user_id,
        name=body.name or "",
        token_hash=runtime.vault.token_digest(secret),
        expires_at=expires_at,
        now=now,
    )
    if token is None:
        raise ApiError(422, "invalid", f"user_id: no user {user_id} in this client", "user_id")
    return TokenCreated(token=secret, **TokenOut.of(token, now).model_dump())


@tokens.get("", response_model=list[TokenOut])
async def list_tokens(runtime: Service, caller: Manager) -> list[TokenOut]:
    now = runtime.clock.now()
    return [TokenOut.of(token, now) for token in await runtime.store.list_tokens(caller.client.id)]


@tokens.delete("/{token_id}", status_code=204)
async def revoke_token(token_id: int, runtime: Service, caller: Manager) -> Response:
    revoked = await runtime.store.revoke_token(caller.client.id, token_id, runtime.clock.now())
    runtime.principals.clear()
    if revoked is None:
        raise NotFound(f"token {token_id} not found")
    return Response(status_code=204)
