"""What each role may do (SPEC 6.3); pure, shared by the API and its tests.

administrator: everything in its client. analyst: read everything, test integrations,
re-send deliveries. read_only: read, with header values and secrets masked. deploy:
ingestion only. api_developer: read and ingestion.
"""

from __future__ import annotations

from enum import StrEnum

from tocsin.errors import Forbidden
from tocsin.models import Principal, Role


class Permission(StrEnum):
    """A kind of API call; every route requires exactly one."""

    READ = "read"  # see configuration, the delivery log, the denylist
    OPERATE = "operate"  # test integrations, re-send deliveries
    MANAGE = "manage"  # change configuration: integrations, users, tokens, applications
    INGEST = "ingest"  # report events: hits, vulnerabilities, scope, API changes, denylist


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMINISTRATOR: frozenset(Permission),
    Role.ANALYST: frozenset({Permission.READ, Permission.OPERATE}),
    Role.READ_ONLY: frozenset({Permission.READ}),
    Role.DEPLOY: frozenset({Permission.INGEST}),
    Role.API_DEVELOPER: frozenset({Permission.READ, Permission.INGEST}),
}

# Roles that see header values and signing secrets as MASK.
MASKED_ROLES = frozenset({Role.READ_ONLY})
MASK = "***"

_VERBS = {
    Permission.READ: "read",
    Permission.OPERATE: "test integrations or re-send deliveries",
    Permission.MANAGE: "change configuration",
    Permission.INGEST: "report events",
}


def allows(role: Role, *permissions: Permission) -> bool:
    """Whether the role holds any of the permissions."""
    return any(permission in GRANTS[role] for permission in permissions)


def refusal(role: Role, *permissions: Permission) -> str | None:
    """Why the role may not make a call needing any of the permissions; None if it may."""
    if allows(role, *permissions):
        return None
    wanted = " or ".join(_VERBS[permission] for permission in permissions)
    holders = sorted(r.value for r in Role if allows(r, *permissions))
    return f"the {role.value} role cannot {wanted} (roles that can: {', '.join(holders)})"


def require(caller: Principal, *permissions: Permission) -> Principal:
    """The caller, if its role holds any of the permissions (SPEC 6.3); else Forbidden.

    Every operation calls it, a sensor's every POST twice: a plain loop, no generator.
    """
    granted = GRANTS[caller.role]
    for permission in permissions:
        if permission in granted:
            return caller
    raise Forbidden(refusal(caller.role, *permissions) or "")
