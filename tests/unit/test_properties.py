"""Properties of the pure modules and validators, for any input hypothesis can think of.

The example-based tests (test_formats.py, test_retry.py) pin the vectors and the
schedule; these check that the rules hold beyond the examples: every hit field kept,
type errors found exactly, descriptions always of SPEC 2.2's shape, bodies that
round-trip, header checks that follow RFC 9110, sampling and retry bounds.
"""

from __future__ import annotations

import string
from itertools import accumulate, pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tocsin import formats, retry, sampling
from tocsin.api.schemas import IntegrationIn
from tocsin.models import BodyFormat, DeliveryStatus
from tocsin.store import grouping
from tocsin.store.base import in_turn

FAST = settings(max_examples=100, deadline=None)
SLOW = settings(max_examples=40, deadline=None)  # for the costlier examples

# --------------------------------------------------------------------------- strategies

# What orjson reads: integers from -2**63 to 2**64 - 1, finite doubles, text without
# lone surrogates (hypothesis' text never makes one).
INTEGERS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=12)
SCALARS = st.none() | st.booleans() | INTEGERS | FLOATS | TEXT
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=8,
)

# The JSON types each known hit field may have (SPEC 2.1, the seed's example), written
# out here rather than read from formats, so that the tests check the table too.
JSON_TYPES: dict[str, set[str]] = {
    "domain": {"string"},
    "heur_distance": {"integer", "number"},
    "method": {"string"},
    "parameter": {"string"},
    "path": {"string"},
    "payloads": {"array"},
    "point": {"array"},
    "probability": {"integer", "number"},
    "remote_country": {"string"},
    "remote_port": {"integer"},
    "remote_addr4": {"string"},
    "remote_addr6": {"string"},
    "tor": {"string"},
    "request_time": {"integer"},
    "create_time": {"integer"},
    "response_len": {"integer"},
    "response_status": {"integer"},
    "response_time": {"integer", "number"},
    "stamps": {"array"},
    "regex": {"array"},
    "stamps_hash": {"integer"},
    "regex_hash": {"integer"},
    "type": {"string"},
    "block_status": {"string"},
    "id": {"array"},
    "object_type": {"string"},
    "anomaly": {"integer", "number"},
}
OF_TYPE = {
    "string": TEXT,
    "integer": INTEGERS,
    "number": FLOATS,
    "array": st.lists(JSON_VALUES, max_size=3),
}


def json_type(value: Any) -> str:
    """The JSON type a parsed value has."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    kinds = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return kinds[type(value)]


def right_type(field: str) -> st.SearchStrategy[Any]:
    """A value of the field's JSON type, or null (unknown)."""
    return st.none() | st.one_of(*(OF_TYPE[kind] for kind in sorted(JSON_TYPES[field])))


EXTRA_KEYS = TEXT.filter(lambda key: key not in JSON_TYPES and key not in ("host", "experimental"))
EXTRAS = st.dictionaries(EXTRA_KEYS, JSON_VALUES, max_size=4)

# A hit as a sensor may report it: any subset of the known fields with the right types,
# `host` perhaps, and keys nobody knows.
WELL_TYPED_HITS = st.builds(
    lambda known, extra, host: known | extra | host,
    st.fixed_dictionaries({}, optional={field: right_type(field) for field in JSON_TYPES}),
    EXTRAS,
    st.fixed_dictionaries({}, optional={"host": st.none() | TEXT}),
)
# Known fields of any JSON type, the right one or not.
ANY_TYPED_HITS = st.builds(
    lambda known, extra: known | extra,
    st.fixed_dictionaries(
        {},
        optional={field: right_type(field) | JSON_VALUES for field in JSON_TYPES},
    ),
    EXTRAS,
)

SETTINGS = st.builds(
    formats.NotifySettings,
    client_name=TEXT,
    cloud=TEXT,
    console_url=TEXT,
    partner_name=TEXT,
    summary_prefix=TEXT,
)
IDS = st.lists(TEXT, min_size=2, max_size=2)


# --------------------------------------------------------------------------- hits


@FAST
@given(raw=WELL_TYPED_HITS, now=INTEGERS, new_id=IDS)
def test_normalize_hit_keeps_every_reported_field_and_adds_every_required_key(
    raw: dict[str, Any], now: int, new_id: list[str]
) -> None:
    hit = formats.normalize_hit(raw, now=now, new_id=lambda: new_id)
    assert set(hit) == set(JSON_TYPES) | set(raw)
    # Every reported value is kept as it is, but the four SPEC 2.1 fills in or fixes.
    filled_in = {"domain", "create_time", "id", "object_type"}
    for key, value in raw.items():
        if key not in filled_in:
            assert hit[key] == value, key
    domain = raw.get("domain")
    assert hit["domain"] == (raw.get("host") if domain is None else domain)
    assert hit["create_time"] == (now if raw.get("create_time") is None else raw["create_time"])
    assert hit["id"] == (raw.get("id") or new_id)
    assert hit["object_type"] == "hit"
    # Known keys not reported are null or empty, and encode as such.
    for key in set(JSON_TYPES) - set(raw) - filled_in:
        assert orjson.loads(orjson.dumps(hit[key])) == ([] if "array" in JSON_TYPES[key] else None)


@SLOW
@given(raw=WELL_TYPED_HITS, notify=SETTINGS, new_id=IDS)
def test_the_fast_hit_encoding_equals_the_reference_encoding(
    raw: dict[str, Any], notify: formats.NotifySettings, new_id: list[str]
) -> None:
    hit = formats.normalize_hit(raw, now=0, new_id=lambda: new_id)
    fast = formats.encode_hit_notification(
        orjson.dumps(hit), formats.hit_notification_prefix(notify)
    )
    reference = formats.encode(formats.hit_notification(hit, notify))
    assert orjson.loads(fast) == orjson.loads(reference)
    assert fast == reference  # the same bytes, even: one layout, one encoder


@SLOW
@given(raw=ANY_TYPED_HITS)
def test_hit_type_error_names_exactly_the_first_wrongly_typed_known_field(
    raw: dict[str, Any],
) -> None:
    wrong = [
        key
        for key, value in raw.items()
        if key in JSON_TYPES and value is not None and json_type(value) not in JSON_TYPES[key]
    ]
    assert formats.hit_type_error(raw) == (wrong[0] if wrong else None)


def test_the_hit_field_table_is_the_spec_table() -> None:
    assert set(formats.HIT_FIELD_TYPES) == set(JSON_TYPES)


@FAST
@given(value=JSON_VALUES, levels=st.integers(min_value=0, max_value=6))
def test_nesting_is_measured_exactly(value: Any, levels: int) -> None:
    def depth(item: Any) -> int:
        if isinstance(item, dict):
            item = list(item.values())
        if not isinstance(item, list):
            return 0
        return 1 + max((depth(child) for child in item), default=0)

    assert formats.nests_deeper_than(value, levels) is (depth(value) > levels)


@FAST
@given(raw=WELL_TYPED_HITS, extra_depth=st.integers(min_value=0, max_value=40))
def test_hit_depth_error_names_a_field_exactly_when_the_hit_is_too_deep(
    raw: dict[str, Any], extra_depth: int
) -> None:
    value: Any = "leaf"
    for _ in range(extra_depth):
        value = [value]
    raw = raw | {"nested": value}
    # The hit object is the first level, so a field may hold MAX_HIT_DEPTH - 1 levels.
    too_deep = [
        key
        for key, item in raw.items()
        if formats.nests_deeper_than(item, formats.MAX_HIT_DEPTH - 1)
    ]
    expected = too_deep[0] if too_deep else None
    assert ("nested" in too_deep) is (extra_depth >= formats.MAX_HIT_DEPTH)
    assert formats.hit_depth_error(raw, orjson.dumps(raw)) == expected
    assert formats.hit_depth_error(raw, None) == expected  # when orjson could not encode it


# --------------------------------------------------------------------------- vulnerabilities

VULNS = st.dictionaries(
    st.sampled_from([*formats.VULN_FIELDS, "extra", "severity"]) | TEXT,
    JSON_VALUES,
    max_size=12,
)
# Text meant to break the description: line breaks of every kind among ordinary text.
LINE_BREAKING_TEXT = st.text(
    alphabet=st.sampled_from(list("ab :\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\t")), max_size=10
)
ONE_LINE_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
HOSTILE_VULNS = st.fixed_dictionaries(
    {}, optional=dict.fromkeys(formats.VULN_FIELDS, LINE_BREAKING_TEXT | INTEGERS)
)
LABELS = [
    "Notification type: vuln",
    "",
    "New vulnerability was detected in your system.",
    "",
    "ID: ",
    "Title: ",
    "Domain: ",
    "Path: ",
    "Method: ",
    "Discovered by: ",
    "Parameter: ",
    "Type: ",
    "Threat: ",
    "",
    "More details: ",
    "",
    "",
    "Client: ",
    "Cloud: ",
]


@FAST
@given(raw=VULNS | HOSTILE_VULNS)
def test_normalize_vuln_yields_exactly_the_nine_fields(raw: dict[str, Any]) -> None:
    vuln = formats.normalize_vuln(raw)
    assert list(vuln) == list(formats.VULN_FIELDS)
    assert len(vuln) == 9
    assert vuln["threat"] in ("High", "Medium", "Low", None)
    for key in set(formats.VULN_FIELDS) - {"threat"}:
        assert vuln[key] == raw.get(key)


@FAST
@given(
    raw=VULNS | HOSTILE_VULNS,
    notify=st.builds(
        formats.NotifySettings,
        client_name=LINE_BREAKING_TEXT,
        cloud=LINE_BREAKING_TEXT,
        console_url=ONE_LINE_TEXT,
        partner_name=TEXT,
    ),
)
def test_a_vuln_description_has_the_lines_of_spec_2_2_whatever_the_values(
    raw: dict[str, Any], notify: formats.NotifySettings
) -> None:
    """Every line a label, in order; no reported value can add a line of its own."""
    notification = formats.vuln_notification(formats.normalize_vuln(raw), notify)
    description = notification["description"]
    assert description.endswith("\n")
    lines = description.split("\n")[:-1]
    assert len(lines) == len(LABELS) == 19
    for line, label in zip(lines, LABELS, strict=True):
        assert line.startswith(label), (line, label)
        if not label.endswith(": "):
            assert line == label
    assert description.splitlines() == lines  # no other kind of line break either
    link = notification["details"]["vuln_link"]
    assert lines[14] == f"More details: {link}"
    assert link.startswith(notify.console_url.rstrip("/") + "/object/")
    assert "/" not in link.removeprefix(notify.console_url.rstrip("/") + "/object/")


# --------------------------------------------------------------------------- bodies

NOTIFICATIONS = st.lists(st.dictionaries(TEXT, JSON_VALUES, max_size=4), max_size=5)


@SLOW
@given(items=NOTIFICATIONS)
def test_render_body_round_trips_in_both_formats(items: list[dict[str, Any]]) -> None:
    encoded = [orjson.dumps(item) for item in items]
    assert orjson.loads(formats.render_body(encoded, BodyFormat.JSON_ARRAY)) == items
    ndjson = formats.render_body(encoded, BodyFormat.NDJSON)
    # One line per notification: compact JSON escapes every LF inside it.
    assert ndjson.count(b"\n") == len(items)
    assert [orjson.loads(line) for line in ndjson.split(b"\n")[:-1]] == items


@SLOW
@given(
    items=NOTIFICATIONS.filter(bool),
    cuts=st.lists(st.integers(min_value=1, max_value=4), max_size=4),
)
def test_grouped_bodies_round_trip_in_both_formats(
    items: list[dict[str, Any]], cuts: list[int]
) -> None:
    """Groups stored newline-joined (store/grouping.py) make the same bodies, however split."""
    encoded = [orjson.dumps(item) for item in items]
    bounds = sorted({0, len(items), *(cut for cut in cuts if cut < len(items))})
    blobs = [b"\n".join(encoded[start:end]) for start, end in pairwise(bounds)]
    assert orjson.loads(grouping.body(blobs, BodyFormat.JSON_ARRAY)) == items
    ndjson = grouping.body(blobs, BodyFormat.NDJSON)
    assert ndjson == formats.render_body(encoded, BodyFormat.NDJSON)
    assert grouping.body(blobs, BodyFormat.JSON_ARRAY) == formats.render_body(
        encoded, BodyFormat.JSON_ARRAY
    )


# --------------------------------------------------------------------------- integration headers

TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)
OWNED = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"}
OWNED |= {"trailer", "keep-alive"}
TARGET = "https://127.0.0.1:8443/hook"
# Mostly token characters, with the separators, controls and look-alikes that are not.
NAME_CHARS = st.sampled_from(sorted(TCHAR)) | st.sampled_from(
    list(' "(),/:;<=>?@[\\]{}\t\r\n\x00\x7f\x85\u2028\u00e9\u0430\uff21')
)
HEADER_NAMES = st.text(alphabet=NAME_CHARS, max_size=12) | st.text(max_size=8)


def is_token(name: str) -> bool:
    """RFC 9110 5.6.2: token = 1*tchar."""
    return bool(name) and all(char in TCHAR for char in name)


def header_error(headers: dict[str, str]) -> str | None:
    """The field IntegrationIn names for these headers, None when it takes them."""
    try:
        IntegrationIn(name="siem", url=TARGET, headers=headers)
    except ValidationError as exc:
        (error,) = exc.errors()
        return ".".join(str(part) for part in error["loc"])
    return None


@FAST
@given(name=HEADER_NAMES)
def test_header_names_are_taken_exactly_when_they_are_rfc_9110_tokens(name: str) -> None:
    owned = name.lower() in OWNED or name.lower().startswith("proxy-")
    expected = None if is_token(name) and not owned else "headers"
    assert header_error({name: "value"}) == expected


UNSAFE = set("\r\n\x00")  # SPEC 3.4
CONTROLS = {chr(code) for code in [*range(0x20), *range(0x7F, 0xA0)]} - {"\t"}
CONTROLS |= {"\u2028", "\u2029"}  # the tighter rule: controls and line separators
VALUE_CHARS = st.characters(codec="utf-8") | st.sampled_from(sorted(CONTROLS | {"\t", " "}))


@FAST
@given(value=st.text(alphabet=VALUE_CHARS, max_size=40))
def test_header_values_are_refused_exactly_when_they_hold_a_control_or_line_break(
    value: str,
) -> None:
    error = header_error({"X-Key": value})
    if UNSAFE & set(value):
        assert error == "headers"  # what SPEC 3.4 asks for, whatever else
    assert error == ("headers" if CONTROLS & set(value) else None)


@FAST
@given(value=st.text(alphabet=VALUE_CHARS, max_size=40), middle=st.sampled_from(["\r\n", "\n"]))
def test_a_second_header_cannot_be_smuggled_into_a_value(value: str, middle: str) -> None:
    assert header_error({"X-Key": f"{value}{middle}X-Injected: 1"}) == "headers"


# --------------------------------------------------------------------------- sampling

# Gaps between hits: often none or small, sometimes past the window.
GAPS = st.lists(
    st.sampled_from([0.0, 0.5, 3599.0, 3600.0, 7200.0])
    | st.floats(min_value=0, max_value=5000, allow_nan=False),
    max_size=60,
)


@FAST
@given(gaps=GAPS, start=st.floats(min_value=0, max_value=2e9, allow_nan=False))
def test_sampling_admits_at_most_five_per_window_and_the_first_five_always(
    gaps: list[float], start: float
) -> None:
    window: sampling.SampleWindow | None = None
    per_window: dict[float, list[bool]] = {}
    for now in accumulate(gaps, initial=start):
        admitted, window = sampling.admit(window, now)
        started_at, _ = window
        assert 0 <= now - started_at < sampling.SAMPLE_WINDOW
        per_window.setdefault(started_at, []).append(admitted)
    for verdicts in per_window.values():
        # Within a window: the first five notify, none after them.
        expected = min(len(verdicts), sampling.SAMPLE_LIMIT)
        assert verdicts == [True] * expected + [False] * (len(verdicts) - expected)


@FAST
@given(
    hits=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from([0.0, 1.0, 3600.0])),
        max_size=80,
    )
)
def test_the_sampler_admits_at_most_five_per_window_per_client_and_key(
    hits: list[tuple[int, int, float]],
) -> None:
    sampler = sampling.Sampler()
    now = 0.0
    opened: dict[tuple[int, int], float] = {}
    admitted: dict[tuple[int, int, float], int] = {}
    for client, key, gap in hits:
        now += gap
        slot = (client, key)
        if slot not in opened or now - opened[slot] >= sampling.SAMPLE_WINDOW:
            opened[slot] = now
        if sampler.admit(client, key, now):
            counted = (client, key, opened[slot])
            admitted[counted] = admitted.get(counted, 0) + 1
    assert all(count <= sampling.SAMPLE_LIMIT for count in admitted.values())


# --------------------------------------------------------------------------- retry

SPEC_WAITS = [1, 3, 5, 10, 10, 0, 1, 3, 5, 30, 60, 60, 180, 300, 600, 1800]


@FAST
@given(failures=st.integers(min_value=1, max_value=10_000))
def test_next_wait_follows_the_spec_schedule_then_gives_up(failures: int) -> None:
    wait = retry.next_wait(failures)
    if failures <= len(SPEC_WAITS):
        assert wait == SPEC_WAITS[failures - 1]
    else:
        assert wait is None


@FAST
@given(failures=st.integers(max_value=0))
def test_next_wait_is_not_asked_before_a_failure(failures: int) -> None:
    with pytest.raises(ValueError, match="after a failure"):
        retry.next_wait(failures)


def test_the_whole_schedule_takes_51_minutes_over_17_attempts() -> None:
    waits = []
    failures = 1
    while (wait := retry.next_wait(failures)) is not None:
        waits.append(wait)
        failures += 1
    assert len(waits) + 1 == retry.MAX_ATTEMPTS == 17
    assert sum(waits) == 29 + 39 + 3000  # the three cycles: 51 min 8 s in all
    assert all(wait >= 0 for wait in waits)


@FAST
@given(
    failures_before=st.integers(min_value=0, max_value=100),
    ok=st.booleans(),
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
def test_decide_retries_until_the_schedule_runs_out(
    failures_before: int, ok: bool, now: float
) -> None:
    status, at = retry.decide(failures_before, ok=ok, now=now)
    if ok:
        assert (status, at) == (DeliveryStatus.DELIVERED, None)
    elif failures_before + 1 <= len(SPEC_WAITS):
        assert status is DeliveryStatus.RETRYING
        assert at == now + SPEC_WAITS[failures_before]
        assert at is not None
        assert at >= now
    else:
        assert (status, at) == (DeliveryStatus.FAILED, None)


@FAST
@given(outcomes=st.lists(st.booleans(), max_size=30))
def test_a_delivery_ends_delivered_or_failed_within_max_attempts(outcomes: list[bool]) -> None:
    """Replay attempts: it stops at the first success or after MAX_ATTEMPTS failures."""
    status = DeliveryStatus.PENDING
    attempts = 0
    for failures, ok in enumerate(outcomes):
        status, _ = retry.decide(failures, ok=ok, now=0.0)
        attempts = failures + 1
        if status is not DeliveryStatus.RETRYING:
            break
    assert attempts <= retry.MAX_ATTEMPTS
    if status in (DeliveryStatus.RETRYING, DeliveryStatus.PENDING):
        assert attempts == len(outcomes) < retry.MAX_ATTEMPTS  # it would go on
    if status is DeliveryStatus.FAILED:
        assert attempts == retry.MAX_ATTEMPTS
        assert not any(outcomes[: retry.MAX_ATTEMPTS])
    if status is DeliveryStatus.DELIVERED:
        assert outcomes[attempts - 1]
        assert not any(outcomes[: attempts - 1])


@given(
    counts=st.lists(st.integers(min_value=1, max_value=12), max_size=40),
    max_batch=st.integers(min_value=1, max_value=10),
    most=st.integers(min_value=1, max_value=8),
)
def test_batches_are_consecutive_deliveries_each_within_max_batch(
    counts: list[int], max_batch: int, most: int
) -> None:
    sizes = grouping.batches(counts, max_batch, most)

    assert len(sizes) <= most
    assert all(size >= 1 for size in sizes)
    ends = list(accumulate(sizes, initial=0))
    for start, end in pairwise(ends):
        taken = counts[start:end]
        # a group bigger than max_batch still goes, alone; otherwise the batch fits
        assert len(taken) == 1 or sum(taken) <= max_batch
        rest = counts[end:]
        if rest:  # and the next group would not have fitted
            assert sum(taken) + rest[0] > max_batch
    # every group is taken unless `most` deliveries were made
    assert ends[-1] == len(counts) or len(sizes) == most


@given(
    ids=st.lists(st.integers(min_value=1, max_value=50), unique=True).map(sorted),
    after=st.integers(min_value=0, max_value=60),
)
def test_in_turn_starts_after_the_last_and_wraps_around(ids: list[int], after: int) -> None:
    turn = in_turn(ids, after)

    assert sorted(turn) == ids
    later = [i for i in ids if i > after]
    assert turn[: len(later)] == later  # those after `after` first, ascending
    assert turn[len(later) :] == [i for i in ids if i <= after]  # then from the lowest
