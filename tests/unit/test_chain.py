"""The hash chain's canonical encoding and verifier (pure logic)."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from audit_service import chain


def event(seq: int, **over):
    base = {
        "tenant_id": uuid.UUID(int=1),
        "event_id": uuid.UUID(int=1000 + seq),
        "seq": seq,
        "created_at": datetime(2026, 11, 27, 12, 0, seq, 123456, tzinfo=UTC),
        "occurred_at": datetime(2026, 11, 27, 13, 0, 0, tzinfo=timezone(timedelta(hours=1))),
        "actor": "alice",
        "action": "login",
        "target": None,
        "outcome": "success",
        "source_ip": "10.0.0.1",
        "user_agent": None,
        "metadata": {"b": [1.0, 0.1], "a": "x"},
        "correlation_id": "c-1",
        "principal": "0b5e3f4e-2f7a-4c3e-9a57-3f1d5c0f6a11",
        "chain_version": chain.CHAIN_VERSION,
    }
    base.update(over)
    return base


def normalized(e):
    return {**e, "metadata": chain.normalize_json(e["metadata"])}


def build(n: int, versions=None):
    """n chained rows; versions[i] is row i's chain version (default: the current one)."""
    rows, prev = [], chain.GENESIS_HASH
    for seq in range(1, n + 1):
        version = versions[seq - 1] if versions else chain.CHAIN_VERSION
        row = normalized(event(seq, prev_hash=prev, chain_version=version))
        row["hash"] = chain.link(prev, row)
        prev = row["hash"]
        rows.append(row)
    return rows


def test_canonical_is_stable_across_offsets_key_order_and_jsonb_number_forms():
    a = event(1)
    b = event(
        1,
        occurred_at=datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC),  # same instant, other offset
        metadata={"a": "x", "b": [1, 0.1]},  # jsonb gives 1.0 back as 1
    )
    assert chain.canonical(normalized(a)) == chain.canonical(normalized(b))


def test_the_hash_changes_with_any_chained_field():
    base = normalized(event(1))
    digest = chain.link(chain.GENESIS_HASH, base)
    for field, value in [
        ("actor", "mallory"),
        ("outcome", "failure"),
        ("metadata", {"a": "y"}),
        ("seq", 2),
        ("created_at", base["created_at"] + timedelta(microseconds=1)),
        ("correlation_id", None),
        ("principal", "admin"),
        ("principal", None),
    ]:
        assert chain.link(chain.GENESIS_HASH, {**base, field: value}) != digest, field
    assert chain.link("f" * 64, base) != digest  # and with the previous link


@pytest.mark.parametrize(
    "value",
    [1e2, 100, 0.1, 1.5e-10, 1e22, 1.7976931348623157e308, -0.0, 2**62, [1.0, {"x": 2.5}]],
)
def test_normalize_survives_a_decimal_round_trip(value):
    # jsonb keeps numbers as decimals: emulate its text output and read it back.
    from decimal import Decimal

    def as_jsonb_text(v):
        if isinstance(v, float):
            return format(Decimal(repr(v)), "f")
        return orjson.dumps(v).decode()

    def jsonb_round_trip(v):
        if isinstance(v, list):
            return [jsonb_round_trip(x) for x in v]
        if isinstance(v, dict):
            return {k: jsonb_round_trip(x) for k, x in v.items()}
        return orjson.loads(as_jsonb_text(chain.normalize_json(v))) if isinstance(v, float | int) else v

    norm = chain.normalize_json(value)
    assert chain.normalize_json(jsonb_round_trip(norm)) == norm
    assert type(chain.normalize_json(jsonb_round_trip(norm))) is type(norm)


def test_normalize_rejects_non_finite():
    with pytest.raises(ValueError):
        chain.normalize_json(float("nan"))


def test_verifier_accepts_an_intact_chain():
    v = chain.ChainVerifier((0, chain.GENESIS_HASH))
    assert v.feed(build(5))
    result = v.result()
    assert (result.valid, result.checked, result.last_seq) == (True, 5, 5)


def test_verifier_names_a_changed_row():
    rows = build(5)
    rows[2] = {**rows[2], "actor": "mallory"}
    result = chain.ChainVerifier((0, chain.GENESIS_HASH))
    result.feed(rows)
    r = result.result()
    assert not r.valid and r.first_invalid == str(rows[2]["event_id"])
    assert "content" in r.reason


def test_verifier_names_the_row_after_a_deleted_one():
    rows = build(5)
    del rows[2]
    v = chain.ChainVerifier((0, chain.GENESIS_HASH))
    v.feed(rows)
    r = v.result()
    assert not r.valid and r.first_invalid == str(rows[2]["event_id"]) and "gap" in r.reason


def test_verifier_detects_a_rewritten_chain_suffix_with_wrong_link():
    rows = build(4)
    forged = {**rows[3], "prev_hash": "f" * 64}
    forged["hash"] = chain.link(forged["prev_hash"], forged)
    v = chain.ChainVerifier((0, chain.GENESIS_HASH))
    v.feed([*rows[:3], forged])
    assert v.result().first_invalid == str(forged["event_id"])


def test_verifier_with_anchor_rejects_missing_start():
    rows = build(5)
    v = chain.ChainVerifier((0, chain.GENESIS_HASH))
    v.feed(rows[1:])  # the first event deleted, no retention anchor
    assert not v.result().valid


# What the version-1 encoding gave for event(1) before versions existed: old rows must still verify.
V1_GOLDEN = "0b3cf8bb736781092b78316212b9ce0c27701f37ec7f14b8974f851d4b0f7fd5"


def test_version_1_is_the_encoding_rows_were_written_with_before_the_principal():
    old = normalized(event(1, chain_version=1))
    del old["principal"]  # not in a version-1 row's hash: it was not stored then
    assert chain.link(chain.GENESIS_HASH, old) == V1_GOLDEN
    assert chain.link(chain.GENESIS_HASH, {**old, "principal": "admin"}) == V1_GOLDEN


def test_version_2_covers_the_principal_and_never_encodes_like_version_1():
    base = normalized(event(1))
    assert base["chain_version"] == 2
    for principal in (None, "admin", "0b5e3f4e-2f7a-4c3e-9a57-3f1d5c0f6a11"):
        e = {**base, "principal": principal}
        assert chain.canonical(e, 2) != chain.canonical(e, 1)
        assert orjson.loads(chain.canonical(e, 2)) == [*orjson.loads(chain.canonical(e, 1)), principal]
    assert list(chain.CHAINED_FIELDS[2]) == [*chain.CHAINED_FIELDS[1], "principal"]


def test_unknown_chain_version_is_refused():
    with pytest.raises(ValueError, match="unknown chain version"):
        chain.canonical(normalized(event(1)), 3)
    rows = build(3)
    rows[1] = {**rows[1], "chain_version": 3}
    v = chain.ChainVerifier((0, chain.GENESIS_HASH))
    v.feed(rows)
    r = v.result()
    assert not r.valid and r.first_invalid == str(rows[1]["event_id"]) and "version" in r.reason


def test_verifier_accepts_version_1_rows_followed_by_version_2_rows():
    # And interleaved: a worker of the older release may write version 1 after a new one wrote 2.
    for versions in ([1, 1, 1, 2, 2], [1, 2, 1, 2, 2]):
        v = chain.ChainVerifier((0, chain.GENESIS_HASH))
        assert v.feed(build(5, versions))
        assert v.result().valid and v.result().checked == 5


def test_verifier_names_a_row_whose_principal_changed():
    rows = build(5, [1, 1, 2, 2, 2])
    rows[3] = {**rows[3], "principal": "admin"}
    v = chain.ChainVerifier((0, chain.GENESIS_HASH))
    v.feed(rows)
    r = v.result()
    assert not r.valid and r.first_invalid == str(rows[3]["event_id"]) and "content" in r.reason


def test_verifier_names_a_version_2_row_relabelled_version_1():
    # Downgrading a row to version 1 would drop its principal from the hash: it breaks the hash.
    rows = build(3)
    rows[1] = {**rows[1], "chain_version": 1, "principal": "admin"}
    v = chain.ChainVerifier((0, chain.GENESIS_HASH))
    v.feed(rows)
    assert v.result().first_invalid == str(rows[1]["event_id"])
