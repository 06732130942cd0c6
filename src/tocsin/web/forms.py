"""The integration form: what a person typed, checked by the API's own schema.

`read_integration` turns a submitted form into the fields of `IntegrationIn` (the API's
request schema, so the console and the API accept and refuse exactly the same), and
`check` validates them: it returns the settings, or each field's error in words, keyed
by the form field it belongs next to. Whatever was typed is kept to show again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tocsin.api.errors import described
from tocsin.api.schemas import IntegrationIn
from tocsin.models import ALL_RISK_LEVELS, BodyFormat, WebhookSettings
from tocsin.roles import MASK
from tocsin.web.base import Form

M = TypeVar("M", bound=BaseModel)

# The form's fields, in the order their errors are shown.
FIELDS = (
    "name",
    "url",
    "method",
    "headers",
    "ca_certificate",
    "verify_tls",
    "request_timeout",
    "connection_timeout",
    "format",
    "events",
    "vuln_risk_levels",
)
EVENTS = (
    ("hit", "Hits", "attacks detected, five of a kind an hour"),
    ("vuln", "Vulnerabilities", "detected, filtered by risk level below"),
    ("system", "System events", "integrations and users added, changed or removed"),
    ("scope", "Scope changes", "hosts, services and domains entering or leaving scope"),
)
RISK_LEVELS = tuple(level.value for level in ALL_RISK_LEVELS)
FORMATS = (
    (BodyFormat.JSON_ARRAY.value, "JSON array"),
    (BodyFormat.NDJSON.value, "NDJSON, one per line"),
)
DEFAULTS: dict[str, Any] = {
    "name": "",
    "url": "",
    "method": "POST",
    "headers": [],
    "ca_certificate": "",
    "verify_tls": True,
    "request_timeout": "15",
    "connection_timeout": "20",
    "format": BodyFormat.JSON_ARRAY.value,
    "events": ["vuln"],
    "vuln_risk_levels": list(RISK_LEVELS),
}


@dataclass
class IntegrationForm:
    """The form's values as typed (shown again) and the error of each field."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)


def blank() -> IntegrationForm:
    return IntegrationForm(values={key: _copy(value) for key, value in DEFAULTS.items()})


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def of_settings(settings: WebhookSettings, *, masked: bool = False) -> IntegrationForm:
    """A saved integration's settings, to edit (or, masked, to look at)."""
    shown = settings.as_dict()
    headers = [(name, MASK if masked else value) for name, value in shown["headers"].items()]
    return IntegrationForm(
        values={
            "name": shown["name"],
            "url": shown["url"],
            "method": shown["method"],
            "headers": headers,
            "ca_certificate": shown["ca_certificate"] or "",
            "verify_tls": shown["verify_tls"],
            "request_timeout": _seconds(shown["request_timeout"]),
            "connection_timeout": _seconds(shown["connection_timeout"]),
            "format": shown["format"],
            "events": list(shown["events"]),
            "vuln_risk_levels": list(shown["vuln_risk_levels"]),
        }
    )


def _seconds(value: float) -> str:
    return f"{value:g}"


def read_integration(form: Form) -> IntegrationForm:
    """The values of a submitted integration form, as typed."""
    names = form.getlist("header_name")
    values = form.getlist("header_value")
    rows = [
        (name.strip(), value)
        for name, value in zip(names, values + [""] * (len(names) - len(values)), strict=True)
        if name.strip() or value
    ]
    return IntegrationForm(
        values={
            "name": form.get("name"),
            "url": form.get("url").strip(),
            "method": form.get("method", "POST"),
            "headers": rows,
            # Browsers send a text area's line ends as CRLF; PEM is stored as typed in a file.
            "ca_certificate": form.get("ca_certificate").replace("\r\n", "\n"),
            "verify_tls": form.get("verify_tls") == "on",
            "request_timeout": form.get("request_timeout").strip(),
            "connection_timeout": form.get("connection_timeout").strip(),
            "format": form.get("format", BodyFormat.JSON_ARRAY.value),
            "events": form.getlist("events"),
            "vuln_risk_levels": form.getlist("vuln_risk_levels"),
        }
    )


def check(typed: IntegrationForm, *, enabled: bool = True) -> WebhookSettings | None:
    """Validate the typed values with the API's schema; errors go into `typed.errors`."""
    values = typed.values
    headers, header_error = _headers(values["headers"])
    body: dict[str, Any] = {
        "name": values["name"],
        "url": values["url"],
        "method": values["method"],
        "headers": headers,
        "ca_certificate": values["ca_certificate"] or None,
        "verify_tls": values["verify_tls"],
        "request_timeout": _number(values["request_timeout"]),
        "connection_timeout": _number(values["connection_timeout"]),
        "format": values["format"],
        "events": values["events"],
        "vuln_risk_levels": values["vuln_risk_levels"],
        "enabled": enabled,
    }
    checked, errors = validated(IntegrationIn, body, FIELDS)
    if header_error:
        errors["headers"] = header_error
    typed.errors.update(errors)
    return None if checked is None or errors else checked.to_settings()


def _headers(rows: list[tuple[str, str]]) -> tuple[dict[str, str], str | None]:
    """The header rows as a dict, or why they cannot be one (a name missing or twice)."""
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for number, (name, value) in enumerate(rows, start=1):
        if not name:
            return headers, f"header row {number} has a value but no name"
        if name.lower() in seen:
            return headers, f"header {name!r} is given twice"
        seen.add(name.lower())
        headers[name] = value
    return headers, None


def _number(text: str) -> Any:
    """A timeout as typed: a number if it reads as one, else the text (the schema says why)."""
    try:
        return float(text)
    except ValueError:
        return text


def _plain(where: str, message: str) -> str:
    """The schema's words, without repeating the field's own name first."""
    return message.removeprefix(f"{where} ").removeprefix(f"{where}: ")


def validated(
    schema: type[M], body: dict[str, Any], fields: tuple[str, ...]
) -> tuple[M | None, dict[str, str]]:
    """`body` checked by an API schema: the model, or each field's error in words."""
    try:
        return schema.model_validate(body), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            found, message = described({**error, "loc": ("body", *error["loc"])})
            name = found or fields[0]
            where = next(
                (
                    known
                    for known in fields
                    if name == known or name.startswith((f"{known}[", f"{known}."))
                ),
                fields[0],
            )
            errors.setdefault(where, _plain(where, message))
        return None, errors
