"""Storage: the Store interface and its implementations."""

from __future__ import annotations

from tocsin.config import sqlite_path
from tocsin.crypto import Vault
from tocsin.errors import ConfigError
from tocsin.store.base import (
    AutoDisabled,
    Bootstrap,
    ClaimLimits,
    Notifier,
    Pruned,
    Store,
    StoreStats,
    Turn,
)
from tocsin.store.stream import Handler, Reaction

__all__ = [
    "AutoDisabled",
    "Bootstrap",
    "ClaimLimits",
    "Handler",
    "Notifier",
    "Pruned",
    "Reaction",
    "Store",
    "StoreStats",
    "Turn",
    "is_postgres",
    "open_store",
]


def open_store(
    database_url: str, *, vault: Vault, synchronous: str = "FULL", max_batch: int = 500
) -> Store:
    """The store for a database URL; `vault` encrypts the secrets it keeps."""
    path = sqlite_path(database_url)
    if path is not None:
        from tocsin.store.sqlite import SqliteStore  # noqa: PLC0415 - imported on demand

        return SqliteStore(path, vault=vault, synchronous=synchronous, max_batch=max_batch)
    if is_postgres(database_url):
        from tocsin.store.postgres import PostgresStore  # noqa: PLC0415 - imported on demand

        return PostgresStore(database_url, vault=vault, max_batch=max_batch)
    raise ConfigError(
        f"unsupported database URL {database_url!r}: use sqlite:///./tocsin.db "
        "or postgresql://user@host:5432/database"
    )


def is_postgres(database_url: str) -> bool:
    """Whether a database URL names PostgreSQL (shared by any number of processes)."""
    return database_url.startswith(("postgresql://", "postgres://"))
