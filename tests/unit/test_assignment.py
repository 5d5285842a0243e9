"""Experiment assignment: hashing, bucket ranges, namespaces, conditions, forcing, stickiness.

Statistical checks use 10k synthetic users and a 4-sigma binomial bound, |p̂ − p| < 4·sqrt(p(1−p)/n):
deterministic hashing makes them exact repeats, and 4 sigma keeps them meaningful (a broken split
misses by far more) without being fragile.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from services.gateway.assignment import (
    FNV_OFFSET_BASIS,
    Assignment,
    assign,
    bucket_ranges,
    check_condition,
    choose_variation,
    eval_condition,
    fnv1a32,
    hash_identity,
    hash_v2,
    in_namespace,
)
from services.gateway.experiments import Experiment

N_USERS = 10_000
USERS = [f"user-{i}" for i in range(N_USERS)]


def target(ref: str = "champion") -> dict[str, str]:
    return {"service": "sequential", "model": "seq-lte", "ref": ref}


def make_exp(weights: tuple[float, ...] = (0.5, 0.5), **kw: Any) -> Experiment:
    variants = [{"key": f"v{i}", "weight": w, "target": target()} for i, w in enumerate(weights)]
    spec: dict[str, Any] = {"key": "exp1", "surface": "home", "status": "running", "variants": variants}
    spec.update(kw)
    return Experiment.model_validate(spec)


def bound(p: float, n: int) -> float:
    return 4 * math.sqrt(p * (1 - p) / n)


# --- hashing ------------------------------------------------------------------------------------------


def test_fnv1a32_reference_values() -> None:
    # FNV-1a, 32 bit: h = 0x811c9dc5; for each octet: h ^= octet; h *= 0x01000193 (mod 2^32).
    assert fnv1a32("") == FNV_OFFSET_BASIS == 0x811C9DC5
    # "a": (0x811c9dc5 ^ 0x61) * 0x01000193 mod 2^32, worked out by hand and checked against a C build.
    assert fnv1a32("a") == ((0x811C9DC5 ^ 0x61) * 0x01000193) % 2**32 == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968  # the FNV reference test vector
    assert fnv1a32("user-1") == 0xF5537974
    assert fnv1a32("é") == 0x1E9DE8C1  # UTF-8 octets c3 a9, not the code point


def test_hash_v2_known_values_and_determinism() -> None:
    # fnv1a32("exp1user-1") = 2366058394; fnv1a32("2366058394") = 3680373993; % 10000 = 3993.
    assert fnv1a32("exp1user-1") == 2366058394
    assert fnv1a32("2366058394") == 3680373993
    assert hash_v2("exp1", "user-1") == 0.3993
    assert hash_v2("exp1", "user-1") == hash_v2("exp1", "user-1")
    values = [hash_v2("exp1", u) for u in USERS[:2000]]
    assert all(0 <= v < 1 for v in values)
    assert [hash_v2("exp2", u) for u in USERS[:2000]] != values  # the seed decorrelates experiments


def test_hash_v2_is_uniform() -> None:
    values = [hash_v2("uniform", u) for u in USERS]
    for lo in (0.0, 0.25, 0.5, 0.75):
        frac = sum(lo <= v < lo + 0.25 for v in values) / N_USERS
        assert abs(frac - 0.25) < bound(0.25, N_USERS), (lo, frac)


# --- bucket ranges ----------------------------------------------------------------------------------------


def test_bucket_ranges_and_choose_variation() -> None:
    assert bucket_ranges(2, 1.0, [0.5, 0.5]) == [(0.0, 0.5), (0.5, 1.0)]
    # Coverage shortens each range from its start; the starts stay put.
    assert bucket_ranges(2, 0.5, [0.5, 0.5]) == [(0.0, 0.25), (0.5, 0.75)]
    flat = [x for r in bucket_ranges(3, 1.0, [0.2, 0.3, 0.5]) for x in r]
    assert flat == pytest.approx([0, 0.2, 0.2, 0.5, 0.5, 1.0])
    assert bucket_ranges(2, 7.0, [0.5, 0.5]) == [(0.0, 0.5), (0.5, 1.0)]  # clamped
    assert bucket_ranges(2, 1.0, [0.9, 0.9]) == [(0.0, 0.5), (0.5, 1.0)]  # bad weights: equal split
    assert bucket_ranges(4, 1.0) == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    ranges = bucket_ranges(2, 0.5, [0.5, 0.5])
    assert choose_variation(0.0, ranges) == 0
    assert choose_variation(0.25, ranges) == -1  # end is exclusive
    assert choose_variation(0.5, ranges) == 1
    assert choose_variation(0.9, ranges) == -1


def test_split_matches_weights() -> None:
    weights = (0.2, 0.3, 0.5)
    exp = make_exp(weights)
    counts = [0, 0, 0]
    for u in USERS:
        a = assign(exp, {"user_id": u})
        assert a is not None and a.in_experiment and a.reason == "hashed"
        counts[a.variant_index] += 1
    for w, c in zip(weights, counts, strict=True):
        assert abs(c / N_USERS - w) < bound(w, N_USERS), (weights, counts)


def test_raising_coverage_never_moves_users_already_in() -> None:
    previous: dict[str, str] = {}
    for coverage in (0.1, 0.3, 0.6, 1.0):
        exp = make_exp((0.4, 0.6), coverage=coverage)
        current = {}
        for u in USERS:
            a = assign(exp, {"user_id": u})
            assert a is not None
            if a.in_experiment:
                current[u] = a.variant_key
            else:
                assert a.reason == "coverage" and a.variant_key == "v0"  # served the control
        moved = [u for u, v in previous.items() if current.get(u) != v]
        assert moved == [], f"coverage {coverage} moved {len(moved)} users"
        assert abs(len(current) / N_USERS - coverage) < bound(coverage, N_USERS) + 1e-9
        previous = current


# --- sticky bucketing ------------------------------------------------------------------------------------


class DictSticky:
    """An in-memory stand-in for the database sticky store (the store is tested in integration)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, str, str], str] = {}

    def lookup(self, key: str, bv: int, attr: str, value: str) -> str | None:
        return self.rows.get((key, bv, attr, value))

    def run(self, exp: Experiment, user: str) -> Assignment:
        a = assign(exp, {"user_id": user}, sticky=self.lookup)
        assert a is not None
        if a.reason == "hashed":
            self.rows.setdefault((exp.key, exp.bucket_version, "user_id", user), a.variant_key)
        return a


def test_weight_change_moves_users_without_stickiness_but_not_with_it() -> None:
    before, after = make_exp((0.5, 0.5)), make_exp((0.2, 0.8))
    first = {u: assign(before, {"user_id": u}).variant_key for u in USERS}  # type: ignore[union-attr]
    # GrowthBook's known behaviour: the boundary moves from 0.5 to 0.2, so users hashed in [0.2, 0.5)
    # change from v0 to v1 (about 30%), everyone else stays.
    moved = sum(assign(after, {"user_id": u}).variant_key != first[u] for u in USERS)  # type: ignore[union-attr]
    assert abs(moved / N_USERS - 0.3) < bound(0.3, N_USERS)

    sticky = DictSticky()
    assigned = {u: sticky.run(before, u).variant_key for u in USERS[:5000]}
    for u in USERS[:5000]:
        a = sticky.run(after, u)
        assert (a.variant_key, a.reason) == (assigned[u], "sticky")
    # New users get the new weights.
    newcomers = [sticky.run(after, u) for u in USERS[5000:]]
    share = sum(a.variant_key == "v1" for a in newcomers) / len(newcomers)
    assert abs(share - 0.8) < bound(0.8, len(newcomers))


def test_bumping_bucket_version_rehashes() -> None:
    sticky = DictSticky()
    v0 = make_exp((0.5, 0.5))
    for u in USERS[:3000]:
        sticky.run(v0, u)
    bumped = make_exp((0.2, 0.8), bucket_version=1)
    for u in USERS[:3000]:
        a = sticky.run(bumped, u)
        fresh = assign(bumped, {"user_id": u})
        assert a.reason == "hashed" and fresh is not None and a.variant_key == fresh.variant_key
        assert a.bucket_version == 1


def test_sticky_skips_condition_but_not_namespace_or_shadow() -> None:
    sticky = DictSticky()
    exp = make_exp((0.5, 0.5), condition={"country": "US"})
    a = assign(exp, {"user_id": "u1", "country": "US"}, sticky=sticky.lookup)
    assert a is not None and a.reason == "hashed"
    sticky.rows[("exp1", 0, "user_id", "u1")] = a.variant_key
    # The user moved country: GrowthBook keeps sticky users in (no flip mid-experiment).
    again = assign(exp, {"user_id": "u1", "country": "DE"}, sticky=sticky.lookup)
    assert again is not None and (again.variant_key, again.reason) == (a.variant_key, "sticky")
    # A sticky variant that became a shadow (or was removed) is ignored: the user is re-hashed.
    sticky.rows[("exp1", 0, "user_id", "u2")] = "gone"
    assert assign(exp, {"user_id": "u2", "country": "US"}, sticky=sticky.lookup).reason == "hashed"  # type: ignore[union-attr]
    # Namespaces stay exclusive even for sticky users.
    ns_exp = make_exp((0.5, 0.5), namespace={"name": "ns", "start": 0.0, "end": 0.5})
    outside = next(u for u in USERS if not in_namespace(u, ("ns", 0.0, 0.5)))
    sticky.rows[("exp1", 0, "user_id", outside)] = "v1"
    r = assign(ns_exp, {"user_id": outside}, sticky=sticky.lookup)
    assert r is not None and (r.in_experiment, r.reason) == (False, "namespace")


def test_sticky_lookup_is_skipped_when_disabled() -> None:
    exp = make_exp((0.5, 0.5), sticky_bucketing=False)
    calls: list[tuple[Any, ...]] = []

    def lookup(*args: Any) -> str | None:
        calls.append(args)
        return "v1"

    assert assign(exp, {"user_id": "u1"}, sticky=lookup).reason == "hashed"  # type: ignore[union-attr]
    assert calls == []


# --- namespaces -------------------------------------------------------------------------------------------


def test_namespaces_are_mutually_exclusive() -> None:
    a = make_exp((0.5, 0.5), key="exp-a", namespace={"name": "home-rank", "start": 0.0, "end": 0.4})
    b = make_exp((0.5, 0.5), key="exp-b", namespace={"name": "home-rank", "start": 0.4, "end": 1.0})
    in_a = {u for u in USERS if assign(a, {"user_id": u}).in_experiment}  # type: ignore[union-attr]
    in_b = {u for u in USERS if assign(b, {"user_id": u}).in_experiment}  # type: ignore[union-attr]
    assert in_a.isdisjoint(in_b)
    assert len(in_a) + len(in_b) == N_USERS  # the two ranges tile the namespace
    assert abs(len(in_a) / N_USERS - 0.4) < bound(0.4, N_USERS)
    out = next(u for u in USERS if u not in in_a)
    r = assign(a, {"user_id": out})
    assert r is not None and (r.in_experiment, r.reason, r.variant_key) == (False, "namespace", "v0")


def test_in_namespace_uses_the_namespace_hash() -> None:
    u = "user-42"
    n = hash_v2("__home-rank", u)
    assert in_namespace(u, ("home-rank", n, min(1.0, n + 0.01)))
    assert not in_namespace(u, ("home-rank", 0.0, n))  # end is exclusive
    assert not in_namespace(u, ("home-rank", n + 0.0001, 1.0))


# --- conditions -------------------------------------------------------------------------------------------

ATTRS = {
    "country": "US",
    "age": 30,
    "tags": ["beta", "mobile"],
    "device": {"os": "ios", "version": 17},
    "plan": None,
    "name": "santa",
}


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({}, True),
        (None, True),
        ({"country": "US"}, True),
        ({"country": "DE"}, False),
        ({"country": "US", "age": 30}, True),
        ({"country": {"$eq": "US"}}, True),
        ({"country": {"$ne": "US"}}, False),
        ({"country": {"$in": ["US", "CA"]}}, True),
        ({"country": {"$nin": ["US", "CA"]}}, False),
        ({"tags": {"$in": ["beta"]}}, True),  # a list attribute matches on any shared element
        ({"tags": {"$nin": ["alpha"]}}, True),
        ({"age": {"$gt": 29, "$lt": 31}}, True),
        ({"age": {"$gte": 30, "$lte": 30}}, True),
        ({"age": {"$gt": 30}}, False),
        ({"age": {"$lt": "40"}}, False),  # mixed types never compare
        ({"missing": {"$gt": 1}}, False),
        ({"name": {"$gt": "alphabet", "$lt": "zebra"}}, True),
        ({"device.os": "ios"}, True),  # dotted paths reach nested attributes
        ({"device.version": {"$gte": 16}}, True),
        ({"device.model.name": {"$exists": True}}, False),
        ({"device.os": {"$exists": True}}, True),
        ({"plan": {"$exists": False}}, True),
        ({"missing": {"$exists": False}}, True),
        ({"missing": {"$in": ["x"]}}, False),
        ({"$or": [{"country": "DE"}, {"age": 30}]}, True),
        ({"$or": [{"country": "DE"}, {"age": 31}]}, False),
        ({"$or": []}, True),
        ({"$and": [{"country": "US"}, {"age": {"$gte": 18}}]}, True),
        ({"$and": [{"country": "US"}, {"age": {"$gte": 40}}]}, False),
        ({"$and": []}, True),
        ({"$not": {"country": "DE"}}, True),
        ({"$not": {"country": "US"}}, False),
        ({"country": {"$not": {"$in": ["DE", "FR"]}}}, True),
        ({"device": {"os": "ios", "version": 17}}, True),  # an object without operators is plain equality
    ],
)
def test_eval_condition(cond: dict[str, Any] | None, expected: bool) -> None:
    assert eval_condition(ATTRS, cond) is expected


def test_check_condition_refuses_typos_and_bad_shapes() -> None:
    assert check_condition({"country": {"$in": ["US"]}, "$or": [{"age": {"$gte": 18}}]}) == []
    problems = check_condition(
        {
            "country": {"$inn": ["US"]},
            "age": {"$in": 18},
            "x": {"$exists": "yes"},
            "y": {"$gt": [1]},
            "$xor": [],
            "$or": {"a": 1},
            "z": {"$eq": 1, "plain": 2},
        }
    )
    text = " | ".join(problems)
    assert "condition.country.$inn: unknown operator" in text
    assert "condition.age.$in needs a list" in text
    assert "condition.x.$exists needs true or false" in text
    assert "condition.y.$gt needs a number or a string" in text
    assert "condition.$xor: unknown logical operator" in text
    assert "condition.$or must be a list of conditions" in text
    assert "condition.z mixes operators and plain keys" in text
    assert check_condition(["x"]) == ["condition must be an object, got list"]


def test_condition_gates_enrollment() -> None:
    exp = make_exp((0.5, 0.5), condition={"country": {"$in": ["US", "CA"]}})
    a = assign(exp, {"user_id": "u1", "country": "US"})
    assert a is not None and a.in_experiment and a.reason == "hashed"
    b = assign(exp, {"user_id": "u1", "country": "DE"})
    assert b is not None and (b.in_experiment, b.reason, b.variant_key) == (False, "condition", "v0")


# --- forcing, status, identity ---------------------------------------------------------------------------


def test_forced_variants() -> None:
    exp = make_exp((0.5, 0.5), coverage=0.0)
    a = assign(exp, {"user_id": "u1"}, forced={"exp1": "v1"})
    assert a is not None and (a.variant_key, a.variant_index, a.in_experiment, a.reason) == ("v1", 1, True, "forced")
    # Forcing works for drafts (QA before launch) and without an id.
    draft = make_exp((0.5, 0.5), status="draft")
    f = assign(draft, {}, forced={"exp1": "v0"})
    assert f is not None and (f.variant_key, f.reason, f.hash_value) == ("v0", "forced", None)
    # An unknown variant key or another experiment's key is ignored.
    assert assign(exp, {"user_id": "u1"}, forced={"exp1": "nope"}).reason == "coverage"  # type: ignore[union-attr]
    assert assign(exp, {"user_id": "u1"}, forced={"other": "v1"}).reason == "coverage"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["draft", "paused", "stopped"])
def test_only_running_experiments_assign(status: str) -> None:
    assert assign(make_exp(status=status), {"user_id": "u1"}) is None


def test_hash_attribute_and_fallback() -> None:
    exp = make_exp((0.5, 0.5), fallback_attribute="device_id")
    by_user = assign(exp, {"user_id": "u1", "device_id": "d1"})
    assert by_user is not None and (by_user.hash_attribute, by_user.attribute_value) == ("user_id", "u1")
    assert by_user.hash_value == hash_v2("exp1", "u1")
    for attrs in ({"device_id": "d1"}, {"user_id": "", "device_id": "d1"}, {"user_id": None, "device_id": "d1"}):
        a = assign(exp, attrs)
        assert a is not None and (a.hash_attribute, a.attribute_value) == ("device_id", "d1")
        assert a.hash_value == hash_v2("exp1", "d1")
    assert assign(exp, {"other": "x"}) is None  # nothing to hash: the experiment does not apply
    assert assign(make_exp(), {"device_id": "d1"}) is None  # no fallback configured
    assert hash_identity({"user_id": 42}, "user_id", None) == ("user_id", "42")  # numbers hash as text
    custom = make_exp((0.5, 0.5), hash_attribute="account", seed="s1")
    c = assign(custom, {"account": "acc-9"})
    assert c is not None and c.hash_value == hash_v2("s1", "acc-9")


def test_shadow_variants_are_never_assigned_by_hash() -> None:
    exp = Experiment.model_validate(
        {
            "key": "shadowed",
            "surface": "home",
            "status": "running",
            "variants": [
                {"key": "live", "weight": 1.0, "target": target()},
                {"key": "candidate", "weight": 0.0, "target": target("v9"), "shadow": True},
            ],
        }
    )
    assert {assign(exp, {"user_id": u}).variant_key for u in USERS[:2000]} == {"live"}  # type: ignore[union-attr]
    assert [v.key for v in exp.shadows] == ["candidate"] and exp.control == "live"
