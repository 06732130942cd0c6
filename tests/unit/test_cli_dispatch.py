"""`tocsin dispatch` refuses what it cannot do, with a message saying what to do instead."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tocsin.cli import main
from tocsin.crypto import Vault
from tocsin.store import open_store
from tocsin.store.postgres import PostgresStore, describe

VAULT = Vault([Vault.generate_key()])


def test_dispatch_refuses_a_sqlite_database() -> None:
    result = CliRunner().invoke(main, ["dispatch", "--database-url", "sqlite:///./tocsin.db"])
    assert result.exit_code == 2
    assert "tocsin dispatch needs a PostgreSQL database" in result.output
    assert "`tocsin serve` delivers from it" in result.output


def test_dispatch_on_postgresql_needs_the_shared_secret_key() -> None:
    result = CliRunner(env={"TOCSIN_SECRET_KEY": None}).invoke(
        main, ["dispatch", "--database-url", "postgresql://tocsin@db.internal/tocsin"]
    )
    assert result.exit_code == 2
    assert "set TOCSIN_SECRET_KEY (or --secret-key) to the same key in every process" in (
        result.output
    )


def test_dispatch_has_the_worker_settings_and_not_the_api_ones() -> None:
    result = CliRunner().invoke(main, ["dispatch", "--help"])
    assert result.exit_code == 0
    for flag in ("--max-in-flight", "--lease-margin", "--allowed-networks", "TOCSIN_MAX_BATCH"):
        assert flag in result.output
    for flag in ("--host", "--port", "--admin-token"):
        assert flag not in result.output


def test_postgresql_urls_open_a_postgres_store_without_connecting() -> None:
    for url in ("postgresql://tocsin:pw@db.internal:6432/events", "postgres://db.internal/x"):
        assert isinstance(open_store(url, vault=VAULT), PostgresStore)


def test_messages_name_the_server_and_never_the_password() -> None:
    assert describe("postgresql://tocsin:hunter2@db.internal:6432/events") == (
        "db.internal:6432/events"
    )
    assert describe("postgres://db.internal/") == "db.internal:5432/postgres"


def test_serve_refuses_no_deliver_on_sqlite(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--no-deliver", "--database-url", f"sqlite:///{tmp_path / 't.db'}"]
    )
    assert result.exit_code == 2
    assert "--no-deliver" in result.output
    assert "PostgreSQL" in result.output
