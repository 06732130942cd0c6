"""Who may call: authentication, the client's users and their API tokens.

Every change here clears the login cache (PrincipalCache) of this process, so that a
revoked token or a changed role takes effect at the next request.
"""

from __future__ import annotations

from dataclasses import dataclass

from tocsin import events, ids
from tocsin.app.context import Context, Notices, actor
from tocsin.errors import Invalid, NotFound, Unauthorized
from tocsin.models import NewEvent, Principal, Role, Token, User
from tocsin.roles import Permission, require
from tocsin.store.base import Changed


async def authenticate(ctx: Context, token: str | None) -> Principal:
    """The holder of a bearer token (remembered briefly: PrincipalCache), or Unauthorized."""
    if not token:
        raise Unauthorized("send Authorization: Bearer <token>")
    digests = ctx.vault.token_digests(token)
    now = ctx.clock.now()
    cache = ctx.principals
    found = cache.get(digests[0], now)
    if found is None:
        found = await ctx.store.principal(digests, now)
        if found is None:
            raise Unauthorized("the token is unknown, expired or revoked")
        cache.put(digests[0], found, now)
    return found


# users ------------------------------------------------------------------------------


async def list_users(ctx: Context, caller: Principal) -> list[User]:
    require(caller, Permission.READ)
    return await ctx.store.list_users(caller.client.id)


async def get_user(ctx: Context, caller: Principal, user_id: int) -> User:
    require(caller, Permission.READ)
    found = await ctx.store.get_user(caller.client.id, user_id)
    if found is None:
        raise NotFound(f"user {user_id} not found")
    return found


async def create_user(
    ctx: Context, caller: Principal, *, email: str, name: str, role: Role
) -> User:
    """A new user of the caller's client (no token yet); notifies `user_created`."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    notices: Notices[User] = Notices(
        lambda user: [_user_event(ctx, caller, "user_created", user, now)]
    )
    user = await ctx.store.create_user(
        caller.client.id, email=email, name=name, role=role, now=now, audit=notices
    )
    ctx.stored(notices.rendered)
    return user


async def set_role(ctx: Context, caller: Principal, user_id: int, role: Role) -> User:
    """Change a user's role (never the last administrator's); notifies `user_role_changed`."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()

    def render(changed: Changed[User]) -> list[NewEvent]:
        if changed.after.role == changed.before.role:
            return []
        previous = changed.before.role
        kind = "user_role_changed"
        return [_user_event(ctx, caller, kind, changed.after, now, previous_role=previous)]

    notices = Notices(render)
    after = await ctx.store.set_role(caller.client.id, user_id, role, now, audit=notices)
    ctx.principals.clear()
    if after is None:
        raise NotFound(f"user {user_id} not found")
    ctx.stored(notices.rendered)
    return after


async def delete_user(ctx: Context, caller: Principal, user_id: int) -> User:
    """Delete a user and its tokens (never the last administrator); notifies `user_deleted`."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    notices: Notices[User] = Notices(
        lambda user: [_user_event(ctx, caller, "user_deleted", user, now)]
    )
    deleted = await ctx.store.delete_user(caller.client.id, user_id, now, audit=notices)
    ctx.principals.clear()
    if deleted is None:
        raise NotFound(f"user {user_id} not found")
    ctx.stored(notices.rendered)
    return deleted


def _user_event(
    ctx: Context,
    caller: Principal,
    kind: str,
    user: User,
    now: float,
    *,
    previous_role: Role | None = None,
) -> NewEvent:
    settings = ctx.notify_settings(caller.client)
    return events.user_event(
        kind, user, settings, actor=actor(caller), now=now, previous_role=previous_role
    )


# tokens -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NewToken:
    """A token just made: `secret` is shown this once; only its digest is kept."""

    token: Token
    secret: str


async def create_token(
    ctx: Context,
    caller: Principal,
    *,
    name: str = "",
    user_id: int | None = None,
    expires_at: float | None = None,
) -> NewToken:
    """A token for a user of the caller's client (the caller by default)."""
    require(caller, Permission.MANAGE)
    now = ctx.clock.now()
    if expires_at is not None and expires_at <= now:
        raise Invalid("must be in the future", "expires_at")
    holder = caller.user_id if user_id is None else user_id
    secret = ids.api_token()
    token = await ctx.store.create_token(
        caller.client.id,
        holder,
        name=name,
        token_hash=ctx.vault.token_digest(secret),
        expires_at=expires_at,
        now=now,
    )
    if token is None:
        raise Invalid(f"no user {holder} in this client", "user_id")
    return NewToken(token=token, secret=secret)


async def list_tokens(ctx: Context, caller: Principal) -> list[Token]:
    require(caller, Permission.MANAGE)
    return await ctx.store.list_tokens(caller.client.id)


async def revoke_token(ctx: Context, caller: Principal, token_id: int) -> Token:
    """Revoke a token of the caller's client (again: no change); it stops working at once."""
    require(caller, Permission.MANAGE)
    revoked = await ctx.store.revoke_token(caller.client.id, token_id, ctx.clock.now())
    ctx.principals.clear()
    if revoked is None:
        raise NotFound(f"token {token_id} not found")
    return revoked
