"""Translating records to and from database rows (shared by the SQL stores)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import orjson

from tocsin.crypto import Vault
from tocsin.memo import Memo
from tocsin.models import (
    Attempt,
    BodyFormat,
    Client,
    Delivery,
    DeliveryStatus,
    EventType,
    Integration,
    Principal,
    RiskLevel,
    Role,
    User,
    WebhookSettings,
)
from tocsin.triggers.definitions import Trigger, TriggerSpec, stored_definition, stored_spec


class Row(Protocol):
    """A database row read by column name or position (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str | int, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


# Integrations remembered decoded: a few MB at most. Every ingest reads its client's
# integrations to route events and every claim those it takes, so without it a client
# with 20 integrations spends ~0.3 ms of the store's thread per POST rebuilding them.
_MAX_DECODED = 2_000


class Secrets:
    """Integration rows <-> records, with header values and signing secrets encrypted at rest."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._decoded: Memo[tuple[Any, ...], Integration] = Memo(_MAX_DECODED)

    def settings_json(self, settings: WebhookSettings) -> str:
        """The settings column: everything but `enabled`; header values encrypted."""
        data = settings.as_dict()
        del data["enabled"]
        data["headers"] = self.vault.encrypt(orjson.dumps(settings.headers).decode())
        return orjson.dumps(data).decode()

    def seal(self, secret: str | None) -> str | None:
        return None if secret is None else self.vault.encrypt(secret)

    def integration(self, row: Row) -> Integration:
        """The integration of a `SELECT *` row, decoded once per distinct row.

        Keyed by every column's value, so any change to the row (settings, secrets,
        status, last error) is a new key: a remembered integration is never stale.
        """
        return self._decoded.get(tuple(row), lambda: self._decode(row))

    def _decode(self, row: Row) -> Integration:
        data = orjson.loads(row["settings"])
        settings = WebhookSettings(
            name=data["name"],
            url=data["url"],
            method=data["method"],
            headers=dict(orjson.loads(self.vault.decrypt(data["headers"]))),
            ca_certificate=data["ca_certificate"],
            verify_tls=data["verify_tls"],
            request_timeout=data["request_timeout"],
            connection_timeout=data["connection_timeout"],
            format=BodyFormat(data["format"]),
            events=tuple(EventType(event) for event in data["events"]),
            vuln_risk_levels=tuple(RiskLevel(level) for level in data["vuln_risk_levels"]),
            enabled=bool(row["enabled"]),
        )
        previous = row["previous_signing_secret"]
        return Integration(
            id=row["id"],
            client_id=row["client_id"],
            settings=settings,
            signing_secret=self.vault.decrypt(row["signing_secret"]),
            previous_signing_secret=None if previous is None else self.vault.decrypt(previous),
            secret_rotated_at=row["secret_rotated_at"],
            disabled_reason=row["disabled_reason"],
            auto_disabled=bool(row["auto_disabled"]),
            last_error=row["last_error"],
            enabled_at=row["enabled_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def reencrypted_settings(self, stored: str) -> str:
        """A settings column with its encrypted headers re-encrypted under the current key."""
        data = orjson.loads(stored)
        data["headers"] = self.vault.rotate(data["headers"])
        return orjson.dumps(data).decode()


def user_from_row(row: Row) -> User:
    return User(
        id=row["id"],
        client_id=row["client_id"],
        email=row["email"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
    )


def principal_from_row(row: Row) -> Principal:
    """A `principal_by_token` row: client id, name, cloud, console URL, then user id,
    email, role, token id, user name, token expiry."""
    client = Client(id=row[0], name=row[1], cloud=row[2], console_url=row[3])
    return Principal(
        client=client,
        user_id=row[4],
        email=row[5],
        role=Role(row[6]),
        token_id=row[7],
        name=row[8],
        token_expires_at=row[9],
    )


def delivery_from_row(row: Row, attempts: Sequence[Attempt] = ()) -> Delivery:
    return Delivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        integration_id=row["integration_id"],
        status=DeliveryStatus(row["status"]),
        notification_count=row["notification_count"],
        body=bytes(row["body"]),
        attempt_count=row["attempt_count"],
        failures=row["failures"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_error=row["last_error"],
        attempts=tuple(attempts),
    )


def attempt_from_row(row: Row) -> Attempt:
    return Attempt(
        number=row["number"],
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        error=row["error"],
        response_body=row["response_body"],
        request_size=row["request_size"],
    )


def trigger_from_row(row: Row) -> Trigger:
    """A `triggers` row (its definition JSON as triggers/definitions.py stored it)."""
    spec = stored_spec(
        name=row["name"],
        comment=row["comment"],
        enabled=bool(row["enabled"]),
        condition=row["condition"],
        definition=row["definition"],
    )
    return Trigger(
        id=row["id"],
        client_id=row["client_id"],
        spec=spec,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        counting_since=row["counting_since"],
    )


def trigger_params(spec: TriggerSpec) -> dict[str, Any]:
    """The columns a trigger's spec is stored in."""
    return {
        "name": spec.name,
        "comment": spec.comment,
        "enabled": spec.enabled,
        "condition": spec.condition.value,
        "definition": stored_definition(spec),
    }
