"""Storage: the Store interface and its implementations."""

from __future__ import annotations

from tocsin.config import sqlite_path
from tocsin.crypto import Vault
from tocsin.errors import ConfigError
from tocsin.store.base import AutoDisabled, Bootstrap, ClaimLimits, Store
from tocsin.store.memory import MemoryStore

__all__ = ["AutoDisabled", "Bootstrap", "ClaimLimits", "MemoryStore", "Store", "open_store"]


def open_store(
    database_url: str, *, vault: Vault, synchronous: str = "FULL", max_batch: int = 500
) -> Store:
    """The store for a database URL; `vault` encrypts the secrets it keeps."""
    path = sqlite_path(database_url)
    if path is not None:
        from tocsin.store.sqlite import SqliteStore  # noqa: PLC0415 - imported on demand

        return SqliteStore(path, vault=vault, synchronous=synchronous, max_batch=max_batch)
    if database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("PostgreSQL support is not in this release yet; use sqlite:///path.db")
    raise ConfigError(f"unsupported database URL {database_url!r}: use sqlite:///./tocsin.db")
