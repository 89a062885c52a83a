"""Bad input (DESIGN.md section 3, "HTTP contract"): never a 500, never half-written, 422 naming
the field (413 for an oversize body, 401 without a valid key).

Every refusal is checked for its status *and* for naming the offending field; the requests that
would write are followed by a look at the database, so that a refused request provably left
nothing behind. A bounded, seeded schemathesis run against the service's own OpenAPI document
closes the file.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from audit_devtools.stack import Service
from conftest import Client, consumer_drained, sql, stored_count, wait_for, wait_stored

ONE = "/api/v1/audit/logs"
BATCH = "/api/v1/audit/logs/batch"
# The service's limit: its default, unless the environment the test stack inherits sets it.
MAX_REQUEST_BYTES = int(os.environ.get("MAX_REQUEST_BYTES", 4 * 1024 * 1024))
MAX_METADATA_BYTES = 16 * 1024


def event(**fields: Any) -> dict[str, Any]:
    return {"actor": "alice", "action": "user.login", **fields}


def without(name: str) -> dict[str, Any]:
    e = event(target="doc-1", outcome="success")
    del e[name]
    return e


def named_fields(response: httpx.Response) -> list[str]:
    return [d["field"] for d in response.json()["detail"]]


def assert_refused(response: httpx.Response, field: str) -> None:
    """422, in the documented shape (a list of errors), naming the offending field."""
    assert response.status_code == 422, f"expected 422, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, response.text
    for d in detail:
        assert set(d) >= {"loc", "field", "msg", "type"}, d
        assert d["field"] == ".".join(str(p) for p in d["loc"] if p not in ("body", "query")), d
    assert field in [d["field"] for d in detail], detail


def post_raw(client: Client, path: str, body: bytes | str, **headers: str) -> httpx.Response:
    return client.http.post(path, content=body, headers={"Content-Type": "application/json", **headers})


def settle(service: Service, client: Client, expected_before: int) -> None:
    """Prove that nothing refused reached the store: after a moment, a valid sentinel event is
    stored and the tenant holds exactly the events it had plus that one. The worker stores in
    stream order, so anything refused-but-published earlier would show up by then too."""
    r = client.post(event(action="sentinel"))
    assert r.status_code == 202, r.text
    wait_stored(service, client.tenant_id, expected_before + 1)
    rows = sql(
        service.database_url,
        "SELECT action FROM audit_logs WHERE tenant_id = $1 ORDER BY seq",
        client.tenant_id,
    )
    assert [row["action"] for row in rows][-1] == "sentinel"


@pytest.fixture(scope="module")
def refused(service: Service) -> Client:
    """One tenant for the requests that are refused before anything could be written (a tenant
    costs two CLI runs); the last test checks that it holds nothing."""
    tenant_id, key = service.tenant(f"bad-input-{uuid.uuid4()}")
    return Client(service.url, key, tenant_id)


# --- single events --------------------------------------------------------------------------------

# (case id, request body as JSON text or a JSON value, the field the 422 must name)
BAD_EVENTS: list[tuple[str, Any, str]] = [
    ("missing-actor", without("actor"), "actor"),
    ("missing-action", without("action"), "action"),
    ("empty-actor", event(actor=""), "actor"),
    ("actor-too-long", event(actor="a" * 257), "actor"),
    ("actor-not-a-string", event(actor={"name": "alice"}), "actor"),
    ("bad-uuid", event(event_id="not-a-uuid"), "event_id"),
    ("bad-uuid-short", event(event_id="1234"), "event_id"),
    ("time-not-rfc3339", event(occurred_at="yesterday at noon"), "occurred_at"),
    ("time-bad-month", event(occurred_at="2024-13-01T00:00:00Z"), "occurred_at"),
    ("time-naive", event(occurred_at="2024-05-01T12:00:00"), "occurred_at"),
    ("time-date-only", event(occurred_at="2024-05-01"), "occurred_at"),
    ("time-year-1", event(occurred_at="0001-01-01T00:00:00+14:00"), "occurred_at"),
    ("time-year-9999", event(occurred_at="9999-12-31T23:59:59-14:00"), "occurred_at"),
    ("time-number", event(occurred_at=1714564800), "occurred_at"),
    ("time-numeric-string", event(occurred_at="1714564800"), "occurred_at"),
    ("unknown-field", event(severity="high"), "severity"),
    ("outcome-other", event(outcome="maybe"), "outcome"),
    ("outcome-case", event(outcome="SUCCESS"), "outcome"),
    ("outcome-null-string", event(outcome=""), "outcome"),
    ("metadata-list", event(metadata=[1, 2, 3]), "metadata"),
    ("metadata-string", event(metadata="{}"), "metadata"),
    ("metadata-number", event(metadata=7), "metadata"),
    ("metadata-over-16k", event(metadata={"blob": "x" * MAX_METADATA_BYTES}), "metadata"),
    ("metadata-nan", '{"actor": "a", "action": "b", "metadata": {"x": NaN}}', "metadata"),
    ("metadata-infinity", '{"actor": "a", "action": "b", "metadata": {"x": [Infinity]}}', "metadata"),
    ("metadata-neg-infinity", '{"actor": "a", "action": "b", "metadata": {"x": -Infinity}}', "metadata"),
    ("metadata-overflowing-float", '{"actor": "a", "action": "b", "metadata": {"x": 1e400}}', "metadata"),
    ("metadata-int-2^63", event(metadata={"n": 2**63}), "metadata"),
    ("metadata-int-2^64", event(metadata={"n": 2**64}), "metadata"),
    ("metadata-int-negative", event(metadata={"deep": [{"n": -(2**63) - 1}]}), "metadata"),
    ("metadata-nul-value", event(metadata={"note": "a\u0000b"}), "metadata"),
    ("metadata-nul-key", event(metadata={"k\u0000": 1}), "metadata"),
    # An unpaired surrogate escape is not Unicode text: the body is invalid JSON.
    ("metadata-lone-surrogate", '{"actor": "a", "action": "b", "metadata": {"s": "\\ud800"}}', ""),
    ("metadata-too-deep", event(metadata=json.loads('{"a":' * 40 + "1" + "}" * 40)), "metadata"),
    ("actor-nul", event(actor="ali\u0000ce"), "actor"),
    ("action-nul", event(action="\u0000"), "action"),
    ("target-nul", event(target="doc\u0000"), "target"),
    ("user-agent-nul", event(user_agent="curl\u0000"), "user_agent"),
    ("actor-lone-surrogate", '{"actor": "\\udc80", "action": "b"}', ""),
    ("source-ip-garbage", event(source_ip="999.1.1.1"), "source_ip"),
    ("source-ip-nul", event(source_ip="10.0.0.1\u0000"), "source_ip"),
    ("body-is-a-list", [event()], ""),
    ("body-is-a-string", '"alice logged in"', ""),
]


def _send(client: Client, path: str, body: Any) -> httpx.Response:
    # json, not orjson: the bodies hold integers beyond 64 bits.
    return post_raw(client, path, body if isinstance(body, str) else json.dumps(body))


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS])
def test_bad_event_is_422_naming_the_field(refused: Client, body: Any, field: str) -> None:
    r = _send(refused, ONE, body)
    assert_refused(r, field)


def test_metadata_limit_is_16_kib_encoded(service: Service, tenant: Client) -> None:
    """Exactly 16 KiB of encoded metadata is accepted (and stored intact); one byte more is not."""
    overhead = len(orjson.dumps({"blob": ""}))
    at_limit = {"blob": "x" * (MAX_METADATA_BYTES - overhead)}
    assert len(orjson.dumps(at_limit)) == MAX_METADATA_BYTES
    over = {"blob": "x" * (MAX_METADATA_BYTES - overhead + 1)}
    assert_refused(tenant.post(event(metadata=over)), "metadata")
    # Multi-byte characters count by their encoded size, not by characters.
    assert_refused(tenant.post(event(metadata={"blob": "é" * (MAX_METADATA_BYTES // 2)})), "metadata")
    r = tenant.post(event(metadata=at_limit))
    assert r.status_code == 202, r.text
    wait_stored(service, tenant.tenant_id, 1)
    got = tenant.get(r.json()["id"])
    assert got.status_code == 200
    assert got.json()["metadata"] == at_limit


def test_64_bit_integers_at_the_edges_are_accepted_and_stored(service: Service, tenant: Client) -> None:
    edges = {"max": 2**63 - 1, "min": -(2**63), "zero": 0, "neg_zero": -0.0, "tiny": 5e-324, "big": 1e300}
    r = tenant.post(event(metadata=edges))
    assert r.status_code == 202, r.text
    wait_stored(service, tenant.tenant_id, 1)
    got = tenant.get(r.json()["id"]).json()["metadata"]
    assert got["max"] == 2**63 - 1 and got["min"] == -(2**63) and got["zero"] == 0
    # jsonb keeps numbers as exact decimals: 1e300 comes back written out in full.
    assert got["tiny"] == 5e-324 and float(got["big"]) == 1e300
    assert tenant.verify()["valid"] is True


def test_invalid_json_body_is_422(refused: Client) -> None:
    for body in ('{"actor": "a", "action": ', "{actor: a}", '{"actor": "a",}', "\x00"):
        r = post_raw(refused, ONE, body)
        assert r.status_code == 422, (body, r.text)
        detail = r.json()["detail"]
        assert detail[0]["type"] == "json_invalid", detail
        assert detail[0]["loc"][0] == "body", detail
    # An empty body is not a JSON document either.
    assert_refused(post_raw(refused, ONE, b""), "")
    assert post_raw(refused, ONE, b"").json()["detail"][0]["type"] == "json_invalid"


def test_bodies_json_cannot_decode_are_422_not_400_or_500(refused: Client) -> None:
    """Bytes that are not UTF-8, an integer too long for Python's int parser and nesting too deep
    for the JSON parser: all bad input, all 422 naming the body."""
    bodies = [
        b'{"actor": "\xff\xfe", "action": "b"}',
        b'{"actor": "a", "action": "b", "metadata": {"n": ' + b"9" * 5000 + b"}}",
        b'{"actor": "a", "action": "b", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ]
    for body in bodies:
        r = post_raw(refused, ONE, body)
        assert r.status_code == 422, (body[:60], r.status_code, r.text)
        assert r.json()["detail"][0]["loc"][0] == "body", r.text


# --- batches --------------------------------------------------------------------------------------


def test_empty_batch_is_422(refused: Client) -> None:
    assert_refused(refused.batch([]), "events")
    assert_refused(post_raw(refused, BATCH, b"{}"), "events")
    assert_refused(post_raw(refused, BATCH, b'{"events": null}'), "events")
    assert_refused(post_raw(refused, BATCH, b'{"events": {"actor": "a"}}'), "events")
    assert_refused(post_raw(refused, BATCH, b'{"events": [], "extra": 1}'), "extra")


def test_batch_over_1000_events_is_422_and_1000_is_accepted(service: Service, tenant: Client) -> None:
    assert_refused(tenant.batch([event(action=f"a{i}") for i in range(1001)]), "events")
    r = tenant.batch([event(action=f"a{i}") for i in range(1000)])
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1000 and len(set(r.json()["ids"])) == 1000
    wait_stored(service, tenant.tenant_id, 1000)


# (index of the bad event in a batch of 10, its fields, the field the 422 must name)
BAD_IN_BATCH: list[tuple[str, int, dict[str, Any] | str, str]] = [
    ("missing-actor", 3, without("actor"), "events.3.actor"),
    ("nul-in-actor", 9, event(actor="x\u0000"), "events.9.actor"),
    ("bad-outcome", 0, event(outcome="nope"), "events.0.outcome"),
    ("naive-time", 5, event(occurred_at="2024-05-01T12:00:00"), "events.5.occurred_at"),
    ("metadata-list", 7, event(metadata=[]), "events.7.metadata"),
    ("metadata-nan", 4, '{"actor": "a", "action": "b", "metadata": {"x": NaN}}', "events.4.metadata"),
    ("unknown-field", 8, event(colour="red"), "events.8.colour"),
]


@pytest.mark.parametrize(
    ("index", "bad", "field"), [c[1:] for c in BAD_IN_BATCH], ids=[c[0] for c in BAD_IN_BATCH]
)
def test_one_bad_event_refuses_the_whole_batch(
    service: Service, tenant: Client, index: int, bad: dict[str, Any] | str, field: str
) -> None:
    before = stored_count(service.database_url, tenant.tenant_id)
    good = [orjson.dumps(event(action=f"batch.{i}", event_id=str(uuid.uuid4()))).decode() for i in range(10)]
    good[index] = bad if isinstance(bad, str) else orjson.dumps(bad).decode()
    r = post_raw(tenant, BATCH, '{"events": [' + ", ".join(good) + "]}")
    assert_refused(r, field)
    # Only the bad event is named.
    assert {f.split(".")[1] for f in named_fields(r)} == {str(index)}, r.text
    settle(service, tenant, before)
    assert stored_count(service.database_url, tenant.tenant_id) == before + 1
    stored_batch = sql(
        service.database_url,
        "SELECT count(*) AS n FROM audit_logs WHERE tenant_id = $1 AND action LIKE 'batch.%'",
        tenant.tenant_id,
    )[0]["n"]
    assert stored_batch == 0


# --- body size ------------------------------------------------------------------------------------


def _batch_body(size: int) -> bytes:
    """A syntactically valid batch body of exactly `size` bytes (events padded with metadata)."""
    head, tail = b'{"events": [', b"]}"
    one = orjson.dumps(event(metadata={"pad": "p" * 2000}))
    n = (size - len(head) - len(tail)) // (len(one) + 1)
    body = head + b",".join([one] * n) + tail
    # Pad with white space to the exact size (JSON allows it anywhere between tokens).
    return body[:-2] + b" " * (size - len(body)) + tail


def test_oversize_body_is_413(service: Service, tenant: Client) -> None:
    before = stored_count(service.database_url, tenant.tenant_id)
    body = _batch_body(MAX_REQUEST_BYTES + 64 * 1024)
    assert len(body) > MAX_REQUEST_BYTES
    r = post_raw(tenant, BATCH, body)
    assert r.status_code == 413, r.text
    r = post_raw(
        tenant, ONE, b'{"actor": "a", "action": "b", "metadata": {"x": "' + b"y" * MAX_REQUEST_BYTES + b'"}}'
    )
    assert r.status_code == 413, r.text

    # Without a Content-Length (chunked), the limit holds while the body streams in.
    def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    r = tenant.http.post(BATCH, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    settle(service, tenant, before)


def test_body_just_under_the_limit_that_is_otherwise_invalid_is_422_not_413(refused: Client) -> None:
    body = _batch_body(MAX_REQUEST_BYTES - 1)
    assert len(body) == MAX_REQUEST_BYTES - 1
    n = len(json.loads(body)["events"])
    assert n > 1000  # too many events: the only thing wrong with it
    assert_refused(post_raw(refused, BATCH, body), "events")
    # One event whose metadata is far over 16 KiB but the body under the limit.
    blob = b"z" * (MAX_REQUEST_BYTES - 200)
    r = post_raw(refused, ONE, b'{"actor": "a", "action": "b", "metadata": {"x": "' + blob + b'"}}')
    assert_refused(r, "metadata")


# --- authentication -------------------------------------------------------------------------------

AUTH_REQUESTS = [
    ("POST", ONE, event()),
    ("POST", BATCH, {"events": [event()]}),
    ("GET", ONE, None),
    ("GET", f"{ONE}/{uuid.uuid4()}", None),
    ("GET", "/api/v1/audit/verify", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), AUTH_REQUESTS, ids=[f"{m} {p}" for m, p, _ in AUTH_REQUESTS]
)
@pytest.mark.parametrize(
    "key", [None, "", "not-a-key", "a" * 4096], ids=["missing", "empty", "invalid", "long"]
)
def test_missing_or_invalid_key_is_401(
    service: Service, method: str, path: str, body: Any, key: str | None
) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    with httpx.Client(base_url=service.url, timeout=30) as http:
        r = http.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, r.text
        assert "X-API-Key" in r.json()["detail"] or "API key" in r.json()["detail"], r.text
        assert r.headers.get("www-authenticate") == "ApiKey"
        # Without a valid key nothing is parsed or validated: invalid fields and bodies that
        # are not JSON at all are both 401.
        if method == "POST":
            r = http.post(path, json={"actor": "", "events": [], "bogus": 1}, headers=headers)
            assert r.status_code == 401, r.text
            r = http.post(path, content=b"{not json", headers=headers)
            assert r.status_code == 401, r.text


# --- query parameters -----------------------------------------------------------------------------


def _cursor(raw: str) -> str:
    import base64

    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


BAD_QUERIES: list[tuple[str, str, dict[str, Any], str]] = [
    ("limit-0", ONE, {"limit": 0}, "limit"),
    ("limit-1001", ONE, {"limit": 1001}, "limit"),
    ("limit-negative", ONE, {"limit": -1}, "limit"),
    ("limit-text", ONE, {"limit": "ten"}, "limit"),
    ("limit-huge", ONE, {"limit": "9" * 30}, "limit"),
    ("cursor-garbage", ONE, {"cursor": "!!!not base64!!!"}, "cursor"),
    ("cursor-wrong-shape", ONE, {"cursor": _cursor("x12")}, "cursor"),
    ("cursor-zero", ONE, {"cursor": _cursor("s0")}, "cursor"),
    ("cursor-not-utf8", ONE, {"cursor": "_w"}, "cursor"),
    ("cursor-beyond-64-bits", ONE, {"cursor": _cursor("s" + "9" * 40)}, "cursor"),
    ("cursor-2^63", ONE, {"cursor": _cursor(f"s{2**63}")}, "cursor"),
    ("cursor-too-long", ONE, {"cursor": "A" * 65}, "cursor"),
    ("since-naive", ONE, {"since": "2024-05-01T00:00:00"}, "since"),
    ("until-naive", ONE, {"until": "2024-05-01T00:00:00"}, "until"),
    ("since-garbage", ONE, {"since": "last tuesday"}, "since"),
    ("since-year-1", ONE, {"since": "0001-01-01T00:00:00+14:00"}, "since"),
    ("until-year-9999", ONE, {"until": "9999-12-31T23:59:59-14:00"}, "until"),
    ("outcome-other", ONE, {"outcome": "maybe"}, "outcome"),
    ("actor-nul", ONE, {"actor": "a\u0000"}, "actor"),
    ("actor-too-long", ONE, {"actor": "a" * 257}, "actor"),
    ("tenant-id-bad", ONE, {"tenant_id": "nope"}, "tenant_id"),
    ("verify-since-naive", "/api/v1/audit/verify", {"since": "2024-05-01T00:00:00"}, "since"),
    ("verify-until-garbage", "/api/v1/audit/verify", {"until": "soon"}, "until"),
    ("verify-since-year-1", "/api/v1/audit/verify", {"since": "0001-01-01T00:00:00+14:00"}, "since"),
    ("verify-until-year-9999", "/api/v1/audit/verify", {"until": "9999-12-31T23:59:59-14:00"}, "until"),
]


@pytest.mark.parametrize(
    ("path", "params", "field"), [c[1:] for c in BAD_QUERIES], ids=[c[0] for c in BAD_QUERIES]
)
def test_bad_query_is_422_naming_the_parameter(
    refused: Client, path: str, params: dict[str, Any], field: str
) -> None:
    r = refused.http.get(path, params=params)
    assert_refused(r, field)


def test_bad_event_id_in_path_is_422(refused: Client) -> None:
    for bad in ("not-a-uuid", "1234", "%00", "0" * 33):
        r = refused.http.get(f"{ONE}/{bad}")
        # Path parameters keep their location in the name (query parameters do not).
        assert_refused(r, "path.event_id")


# --- after all that -------------------------------------------------------------------------------


def test_valid_event_after_bad_input_is_accepted_and_stored_once(
    service: Service, tenant: Client, refused: Client
) -> None:
    """Every refused request of this file, on one tenant; then a valid event is accepted and stored
    exactly once (a retry with the same event_id included), and the chain verifies."""
    assert stored_count(service.database_url, refused.tenant_id) == 0
    for _, body, _ in BAD_EVENTS:
        assert _send(tenant, ONE, body).status_code == 422
        raw = body if isinstance(body, str) else json.dumps(body)
        assert (
            post_raw(tenant, BATCH, '{"events": [' + json.dumps(event()) + ", " + raw + "]}").status_code
            == 422
        )
    assert tenant.batch([]).status_code == 422
    assert tenant.batch([event()] * 1001).status_code == 422
    assert post_raw(tenant, BATCH, _batch_body(MAX_REQUEST_BYTES + 1024)).status_code == 413
    wait_for(lambda: consumer_drained(service), 30, what="the consumer's pending and ack-pending at 0")
    assert stored_count(service.database_url, tenant.tenant_id) == 0

    event_id = str(uuid.uuid4())
    good = event(
        event_id=event_id,
        target="doc-9",
        outcome="success",
        occurred_at="2024-05-01T12:00:00+02:00",
        source_ip="2001:db8::1",
        user_agent="tests",
        metadata={"k": [1, 2.5, "v", None, True]},
    )
    r = tenant.post(good)
    assert r.status_code == 202, r.text
    assert r.json() == {"id": event_id, "status": "accepted"}
    wait_stored(service, tenant.tenant_id, 1)
    retry = tenant.post(good)
    assert retry.status_code == 202 and retry.json()["id"] == event_id
    settle(service, tenant, 1)
    rows = sql(
        service.database_url, "SELECT count(*) AS n FROM audit_logs WHERE event_id = $1", uuid.UUID(event_id)
    )
    assert rows[0]["n"] == 1
    got = tenant.get(event_id).json()
    assert got["actor"] == "alice" and got["metadata"] == {"k": [1, 2.5, "v", None, True]}
    assert got["occurred_at"].startswith("2024-05-01T10:00:00")
    assert tenant.verify() == {"valid": True, "checked": 2, "first_invalid": None, "reason": None}


# --- schemathesis ---------------------------------------------------------------------------------

FUZZ_EXAMPLES = 50


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True  # per operation and generation mode


def test_schemathesis_no_server_error_and_responses_conform(service: Service, tenant: Client) -> None:
    """Every operation of the service's own OpenAPI document, fuzzed with valid (positive) and
    invalid (negative) input under the tenant's key: no 5xx, and documented responses conform to
    their schema. Whatever was accepted is then stored, exactly once, on a chain that verifies."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    with httpx.Client(trust_env=False, timeout=30) as http:
        doc = http.get(f"{service.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=service.url)
    session = requests.Session()
    session.trust_env = False  # loopback only: never a proxy from the environment
    headers = {"X-API-Key": tenant.http.headers["X-API-Key"]}
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]

    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert labels >= {
        "POST /api/v1/audit/logs",
        "POST /api/v1/audit/logs/batch",
        "GET /api/v1/audit/logs",
        "GET /api/v1/audit/logs/{event_id}",
        "GET /api/v1/audit/verify",
        "GET /health",
        "GET /api/v1/metrics/health",
        "GET /api/v1/metrics/stats",
        "GET /api/v1/metrics",
    }, labels

    accepted: set[str] = set()
    statuses: dict[str, set[int]] = {}
    failures: list[str] = []
    started = time.monotonic()

    def fuzzer(op: Any, mode: Any) -> Any:
        @settings(
            max_examples=FUZZ_EXAMPLES,
            derandomize=True,  # the same cases on every run
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            if mode == schemathesis.GenerationMode.POSITIVE and isinstance(case.body, dict):
                # The schema calls source_ip a string; without an address most events would be
                # refused, and fewer would go on to be stored.
                events = case.body.get("events") if "events" in case.body else [case.body]
                for e in events if isinstance(events, list) else []:
                    if isinstance(e, dict) and isinstance(e.get("source_ip"), str):
                        e["source_ip"] = "192.0.2.1"
            if case.query and _is_uuid(case.query.get("tenant_id")):
                # A random tenant is 403 before the rest is looked at; the caller's own is allowed.
                case.query["tenant_id"] = tenant.tenant_id
            response = case.call(session=session, headers=headers, timeout=30)
            statuses.setdefault(op.label, set()).add(response.status_code)
            if response.status_code == 202:
                body = response.json()
                accepted.update(body["ids"] if "ids" in body else [body["id"]])
            case.validate_response(response, checks=checks, headers=headers)

        return fuzz

    for op in operations:
        spec = doc["paths"][op.path][op.method.lower()]
        modes = [schemathesis.GenerationMode.POSITIVE]
        if spec.get("parameters") or spec.get("requestBody"):  # else there is nothing to make invalid
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            try:
                fuzzer(op, mode)()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported together below
                failures.append(f"{op.label} [{mode.value}]: {exc}")
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(failures)
    assert set(statuses) == labels, f"operations never called: {labels - set(statuses)}"
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    # Positive ingest got through, negative input was refused.
    assert 202 in statuses["POST /api/v1/audit/logs"] and 422 in statuses["POST /api/v1/audit/logs"], statuses
    assert 202 in statuses["POST /api/v1/audit/logs/batch"], statuses
    assert elapsed < 150, f"fuzzing took {elapsed:.0f}s"

    # Everything the API accepted is stored (the worker choked on none of it), exactly once.
    wait_for(
        lambda: stored_count(service.database_url, tenant.tenant_id) >= len(accepted),
        60,
        what=f"{len(accepted)} fuzzed events stored",
    )
    rows = sql(service.database_url, "SELECT event_id FROM audit_logs WHERE tenant_id = $1", tenant.tenant_id)
    assert sorted(str(r["event_id"]) for r in rows) == sorted(accepted)
    assert tenant.verify()["valid"] is True
