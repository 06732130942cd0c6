"""Secrets at rest: encryption of stored secrets and keyed digests of API tokens.

Keys are Fernet keys (urlsafe base64 of 32 bytes). The first key encrypts; every
key decrypts, so a key is rotated by putting a new one first, running
`tocsin rotate-key`, then dropping the old one. API tokens are stored as
HMAC-SHA256 digests under each key's MAC key: a leaked database without the key
gives an attacker neither tokens nor a way to test guesses offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from tocsin.config import sqlite_path
from tocsin.errors import ConfigError, TocsinError
from tocsin.memo import Memo

log = logging.getLogger("tocsin")

PREFIX = "enc:v1:"
_MAX_DECRYPTED = 50_000  # ciphertexts remembered (two or three per integration)


class DecryptionError(TocsinError):
    """A stored secret cannot be decrypted with any configured key."""


class Vault:
    """Encrypts and decrypts stored secrets with a list of keys, the first one current."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("at least one secret key is needed")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise ConfigError(
                "TOCSIN_SECRET_KEY: each key must be 32 url-safe base64-encoded bytes "
                "(make one with `tocsin generate-key`)"
            ) from exc
        self._keys = list(keys)
        self._mac_keys = [hashlib.sha256(b"tocsin-token-mac:" + key).digest() for key in keys]
        # Stored ciphertext -> its text. Fernet draws a fresh IV for every encryption, so a
        # ciphertext names one text for good; reading an integration on every claim and
        # every ingestion then costs a dict lookup, not two AES + HMAC rounds.
        self._decrypted: Memo[str, str] = Memo(_MAX_DECRYPTED)

    @classmethod
    def generate_key(cls) -> bytes:
        return Fernet.generate_key()

    def encrypt(self, text: str) -> str:
        return PREFIX + self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, stored: str) -> str:
        return self._decrypted.get(stored, lambda: self._decrypt(stored))

    def _decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            raise DecryptionError("a stored secret is not encrypted")
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError(
                "a stored secret cannot be decrypted: is TOCSIN_SECRET_KEY (or the key file) "
                "the one it was written with?"
            ) from exc

    def rotate(self, stored: str) -> str:
        """The same secret, encrypted with the current key."""
        return PREFIX + self._fernet.rotate(stored.removeprefix(PREFIX).encode()).decode()

    def derived(self, purpose: str) -> MultiFernet:
        """A cipher of its own for `purpose` (console sessions), one key per vault key.

        Its keys are HMACs of the vault's keys, current first: what it seals can never be
        opened as a stored secret or the other way round, and rotating the vault's keys
        rotates it too.
        """
        label = f"tocsin-derived:{purpose}".encode()
        return MultiFernet(
            [
                Fernet(base64.urlsafe_b64encode(hmac.new(key, label, hashlib.sha256).digest()))
                for key in self._keys
            ]
        )

    def token_digest(self, token: str) -> str:
        """What is stored for a new token (under the current key)."""
        return self.token_digests(token)[0]

    def token_digests(self, token: str) -> list[str]:
        """A token's digest under every key, current first, to look it up after a rotation."""
        return [hmac.new(key, token.encode(), hashlib.sha256).hexdigest() for key in self._mac_keys]


def open_vault(secret_key: str | None, database_url: str) -> Vault:
    """The vault of a deployment: TOCSIN_SECRET_KEY, else a key file beside the SQLite file.

    PostgreSQL has no file to keep a key beside, and every process sharing the database
    must hold the same key: there TOCSIN_SECRET_KEY is required.
    """
    path = sqlite_path(database_url)
    key_file = None if path is None else path.with_name(path.name + ".key")
    return Vault(load_keys(secret_key, key_file))


def load_keys(secret_key: str | None, key_file: Path | None) -> list[bytes]:
    """Keys from TOCSIN_SECRET_KEY (comma-separated, current first), else from the key file.

    Without either, a new key file is created with mode 0600.
    """
    if secret_key:
        return [part.strip().encode() for part in secret_key.split(",") if part.strip()]
    if key_file is None:
        raise ConfigError(
            "set TOCSIN_SECRET_KEY (or --secret-key) to the same key in every process: "
            "a PostgreSQL database has no file beside it to keep a key in "
            "(make one with `tocsin generate-key`)"
        )
    if not key_file.exists():
        create_key_file(key_file)
    check_key_file(key_file)
    return [line.strip() for line in key_file.read_bytes().splitlines() if line.strip()]


def create_key_file(key_file: Path) -> None:
    """A new key in a file only its owner can read, whole or not at all."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    draft = key_file.with_name(f".{key_file.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(Vault.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(draft, key_file)  # fails if another process made one first: theirs is kept
    except FileExistsError:
        pass
    else:
        log.warning(
            "created the secret key file %s (mode 0600): it decrypts every integration's "
            "secrets; back it up with the database, kept apart from the database's copies",
            key_file.resolve(),
        )
    finally:
        draft.unlink(missing_ok=True)


def check_key_file(key_file: Path) -> None:
    """Refuse a key file that others than its owner may read, as ssh refuses a key."""
    mode = stat.S_IMODE(key_file.stat().st_mode)
    if mode & 0o077:
        where = key_file.resolve()
        raise ConfigError(
            f"the secret key file {where} may be read by others (mode {mode:04o}): "
            f"run chmod 600 {where}"
        )
