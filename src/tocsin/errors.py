"""tocsin's exceptions: one root, translated at the edges.

TocsinError
├── ConfigError          a setting or command-line value is unusable
├── StoreError           the database failed or is unreachable
│   └── MigrationError   the schema could not be brought up to date
├── NotFound             an object does not exist (or belongs to another client)
├── Conflict             an operation does not apply to the object's state
└── TargetRefused        a webhook target is not allowed (scheme or network)
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
