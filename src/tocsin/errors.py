"""tocsin's exceptions: one root, translated at the edges.

TocsinError
├── ConfigError          a setting or command-line value is unusable
├── StoreError           the database failed or is unreachable
│   └── MigrationError   the schema could not be brought up to date
├── NotFound             an object does not exist (or belongs to another client)
├── Conflict             an operation does not apply to the object's state
├── TargetRefused        a webhook target is not allowed (scheme or network)
├── Unauthorized         no credentials, or unknown, expired or revoked ones
├── Forbidden            the caller's role (or credential) may not do this
├── Invalid              a value given to an operation is unusable; `field` names it
└── RateLimited          the caller exceeded its rate; `retry_after` says for how long

The operations (tocsin.app) raise these; api/errors.py maps each to its HTTP status.
"""

from __future__ import annotations


class TocsinError(Exception):
    """Root of every error tocsin raises on purpose."""


class ConfigError(TocsinError):
    """A setting is missing or unusable."""


class StoreError(TocsinError):
    """The database failed."""


class MigrationError(StoreError):
    """The schema could not be migrated."""


class NotFound(TocsinError):  # noqa: N818 - reads as the HTTP status it becomes
    """The object does not exist for this client."""


class Conflict(TocsinError):  # noqa: N818 - reads as the HTTP status it becomes
    """The operation does not apply to the object's current state."""


class TargetRefused(TocsinError):  # noqa: N818 - a refusal, not a malfunction
    """A webhook target URL or address is not allowed by the deployment."""


class Unauthorized(TocsinError):  # noqa: N818 - reads as the HTTP status it becomes
    """No credentials, or ones that name nobody (unknown, expired, revoked)."""


class Forbidden(TocsinError):  # noqa: N818 - reads as the HTTP status it becomes
    """The caller is known and may not do this."""


class Invalid(TocsinError):  # noqa: N818 - a refusal of a value, not a malfunction
    """A value given to an operation is unusable; `field` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class RateLimited(TocsinError):  # noqa: N818 - a refusal, not a malfunction
    """The caller reported more than its rate allows; it may retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
