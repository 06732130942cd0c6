"""The console's integration form: the API's rules, each error next to its field."""

from __future__ import annotations

from tocsin.models import BodyFormat, RiskLevel
from tocsin.web.base import Form
from tocsin.web.forms import check, of_settings, read_integration

CA = "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"


def submitted(**overrides: str | list[str]) -> Form:
    fields: dict[str, str | list[str]] = {
        "name": "SIEM",
        "url": "https://siem.example.com/hook",
        "method": "POST",
        "header_name": ["Authorization", "X-Team"],
        "header_value": ["Bearer s3cret", "red"],
        "ca_certificate": "",
        "verify_tls": "on",
        "request_timeout": "15",
        "connection_timeout": "20",
        "format": "json_array",
        "events": ["hit", "vuln"],
        "vuln_risk_levels": ["high", "medium"],
    } | overrides
    pairs = [
        (key, item)
        for key, value in fields.items()
        for item in (value if isinstance(value, list) else [value])
    ]
    return Form(pairs)


def test_a_good_form_becomes_the_settings_the_api_would_store() -> None:
    settings = check(read_integration(submitted()))
    assert settings is not None
    assert settings.headers == {"Authorization": "Bearer s3cret", "X-Team": "red"}
    assert settings.verify_tls
    assert settings.request_timeout == 15
    assert settings.format is BodyFormat.JSON_ARRAY
    assert settings.vuln_risk_levels == (RiskLevel.HIGH, RiskLevel.MEDIUM)


def test_each_error_is_keyed_by_its_field_and_the_input_is_kept() -> None:
    typed = read_integration(
        submitted(url="ftp://x", request_timeout="soon", connection_timeout="0", ca_certificate=CA)
    )
    assert check(typed) is None
    assert typed.errors["url"].startswith("must be an absolute URL")
    assert typed.errors["request_timeout"] == "must be a number of seconds"
    assert "greater than or equal to 1" in typed.errors["connection_timeout"]
    assert "not a PEM certificate" in typed.errors["ca_certificate"]
    assert "name" not in typed.errors
    assert typed.values["url"] == "ftp://x"
    assert typed.values["request_timeout"] == "soon"
    assert typed.values["ca_certificate"] == CA


def test_header_rows_are_checked_by_the_api_rules_and_the_forms_own() -> None:
    owned = read_integration(submitted(header_name=["Host"], header_value=["evil"]))
    assert check(owned) is None
    assert "set by tocsin" in owned.errors["headers"]
    twice = read_integration(submitted(header_name=["X-A", "x-a"], header_value=["1", "2"]))
    assert check(twice) is None
    assert owned.values["headers"] == [("Host", "evil")]
    assert twice.errors["headers"] == "header 'x-a' is given twice"
    nameless = read_integration(submitted(header_name=[""], header_value=["v"]))
    assert check(nameless) is None
    assert nameless.errors["headers"] == "header row 1 has a value but no name"


def test_blank_header_rows_are_ignored() -> None:
    typed = read_integration(submitted(header_name=["", "X-A"], header_value=["", "1"]))
    settings = check(typed)
    assert settings is not None
    assert settings.headers == {"X-A": "1"}


def test_an_unknown_event_or_risk_level_is_an_error_of_that_group() -> None:
    typed = read_integration(submitted(events=["hit", "bogus"], vuln_risk_levels=["severe"]))
    assert check(typed) is None
    assert set(typed.errors) == {"events", "vuln_risk_levels"}


def test_saved_settings_fill_the_form_masked_for_read_only() -> None:
    settings = check(read_integration(submitted()))
    assert settings is not None
    shown = of_settings(settings, masked=True)
    assert shown.values["headers"] == [("Authorization", "***"), ("X-Team", "***")]
    assert of_settings(settings).values["headers"][0] == ("Authorization", "Bearer s3cret")
    assert of_settings(settings).values["request_timeout"] == "15"
