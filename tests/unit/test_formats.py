"""The golden vectors, reproduced exactly, and the format rules of SPEC 2."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.golden import vector
from tocsin import formats
from tocsin.models import BodyFormat, RiskLevel


def settings_of(data: dict[str, Any]) -> formats.NotifySettings:
    return formats.NotifySettings(**data["settings"])


def test_hit_vector() -> None:
    data = vector("hit.json")
    hit = formats.normalize_hit(data["input"], now=0, new_id=lambda: ["unused", "unused"])
    assert formats.hit_notification(hit, settings_of(data)) == data["expected"]


def test_vuln_vector() -> None:
    data = vector("vuln.json")
    vuln = formats.normalize_vuln(data["input"])
    assert formats.vuln_notification(vuln, settings_of(data)) == data["expected"]


def test_test_message_vector() -> None:
    data = vector("test_message.json")
    assert formats.test_message(settings_of(data)) == data["expected"]


def test_vector_survives_encoding() -> None:
    data = vector("vuln.json")
    vuln = formats.normalize_vuln(data["input"])
    encoded = formats.encode(formats.vuln_notification(vuln, settings_of(data)))
    body = formats.render_body([encoded], BodyFormat.JSON_ARRAY)
    assert orjson.loads(body) == [data["expected"]]


def test_summary_prefix_is_configurable() -> None:
    data = vector("hit.json")
    settings = formats.NotifySettings(**(data["settings"] | {"summary_prefix": "[ACME]"}))
    hit = formats.normalize_hit(data["input"], now=0, new_id=lambda: ["a", "b"])
    assert formats.hit_notification(hit, settings)["summary"] == "[ACME] New hit detected"


def test_sparse_hit_gets_every_key_with_empty_values() -> None:
    hit = formats.normalize_hit(
        {"host": "api.example.com", "type": "xss"}, now=1700, new_id=lambda: ["x", "y"]
    )
    assert set(formats.HIT_FIELD_TYPES) <= set(hit)
    assert hit["domain"] == "api.example.com"
    assert hit["host"] == "api.example.com"
    assert orjson.loads(orjson.dumps(hit))["payloads"] == []
    assert hit["remote_port"] is None
    assert hit["create_time"] == 1700
    assert hit["id"] == ["x", "y"]
    assert hit["object_type"] == "hit"


def test_reported_create_time_and_id_are_kept() -> None:
    hit = formats.normalize_hit(
        {"create_time": 5, "id": ["a", "b"]}, now=99, new_id=lambda: ["x", "y"]
    )
    assert (hit["create_time"], hit["id"]) == (5, ["a", "b"])


def test_unknown_hit_fields_are_kept() -> None:
    hit = formats.normalize_hit({"custom": {"a": 1}}, now=1, new_id=lambda: ["x", "y"])
    assert hit["custom"] == {"a": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_time", "soon"),
        ("payloads", "x"),
        ("remote_port", 1.5),
        ("tor", 3),
        ("anomaly", True),
    ],
)
def test_hit_type_error_names_the_field(field: str, value: object) -> None:
    assert formats.hit_type_error({field: value}) == field


def test_vuln_with_missing_values_keeps_labels_and_nulls() -> None:
    settings = formats.NotifySettings(
        client_name="C", cloud="US", console_url="https://console.example/", partner_name="P"
    )
    vuln = formats.normalize_vuln({"id": 7, "title": "T", "threat": "high", "extra": "dropped"})
    notification = formats.vuln_notification(vuln, settings)
    assert notification["details"]["vuln"] == {
        "domain": None,
        "id": 7,
        "method": None,
        "parameter": None,
        "path": None,
        "title": "T",
        "discovered_by": None,
        "threat": "High",
        "type": None,
    }
    assert notification["details"]["vuln_link"] == "https://console.example/object/7"
    assert "\nPath: \n" in notification["description"]


@pytest.mark.parametrize(
    ("threat", "risk"),
    [
        ("High", RiskLevel.HIGH),
        ("medium", RiskLevel.MEDIUM),
        ("LOW", RiskLevel.LOW),
        (None, None),
        ("x", None),
    ],
)
def test_risk_of(threat: str | None, risk: RiskLevel | None) -> None:
    assert formats.risk_of({"threat": threat}) is risk


def test_ndjson_body_is_one_object_per_line() -> None:
    body = formats.render_body([b'{"a":1}', b'{"b":2}'], BodyFormat.NDJSON)
    assert body == b'{"a":1}\n{"b":2}\n'
    assert formats.content_type(BodyFormat.NDJSON) == "application/x-ndjson"
    assert formats.content_type(BodyFormat.JSON_ARRAY) == "application/json"


def test_sample_key_ignores_fields_outside_identity() -> None:
    base = {
        "type": "sqli",
        "parameter": "q",
        "domain": "d",
        "path": "/",
        "method": "GET",
        "response_status": 200,
    }
    one = formats.sample_key(base | {"remote_addr4": "1.1.1.1", "payloads": ["a"]})
    two = formats.sample_key(base | {"remote_addr4": "1.1.1.1", "payloads": ["b"]})
    other_ip = formats.sample_key(base | {"remote_addr4": "2.2.2.2"})
    assert one == two
    assert one != other_ip


def test_fast_hit_encoding_equals_the_reference_encoding() -> None:
    data = vector("hit.json")
    settings = settings_of(data)
    hit = formats.normalize_hit(data["input"], now=0, new_id=lambda: ["a", "b"])
    fast = formats.encode_hit_notification(
        orjson.dumps(hit), formats.hit_notification_prefix(settings)
    )
    assert orjson.loads(fast) == data["expected"]
    assert orjson.loads(fast) == orjson.loads(
        formats.encode(formats.hit_notification(hit, settings))
    )
