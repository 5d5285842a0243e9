"""The CTR ranking service as a real process over the demo's registered ranker, and the gateway's
two-stage surface (sequential candidates re-ranked by it) under A/B variants and version pins."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import free_port
from tests.e2e.helpers import AUTH, TOKEN, start_service, stop_service


@pytest.fixture(scope="module")
def topology(demo_env: dict[str, str]) -> Iterator[dict]:
    seq_port, ctr_port, gw_port = free_port(), free_port(), free_port()
    env = {
        **demo_env,
        "RECSYS_ADMIN_TOKEN": TOKEN,
        "RECSYS_SERVICES": json.dumps(
            {"sequential": f"http://127.0.0.1:{seq_port}", "ctr": f"http://127.0.0.1:{ctr_port}"}
        ),
        "RECSYS_BREAKER_RESET_S": "0.5",
    }
    procs = {
        "sequential": start_service("sequential", seq_port, env),
        "ctr": start_service("ctr", ctr_port, env),
    }
    procs["gateway"] = start_service("gateway", gw_port, env)
    state = {
        "env": env,
        "procs": procs,
        "ctr": f"http://127.0.0.1:{ctr_port}",
        "ctr_port": ctr_port,
        "url": f"http://127.0.0.1:{gw_port}",
    }
    yield state
    for proc in procs.values():
        if proc.poll() is None:
            stop_service(proc)


def _users_and_items(demo_env: dict[str, str]) -> tuple[list[str], list[str]]:
    data = Path(demo_env["RECSYS_DATA_DIR"]) / "offline"
    users = pd.read_parquet(data / "user_profile" / "v1.parquet", columns=["user_id"])["user_id"].tolist()
    # Most popular first: impressions favour them, so the ranker's vocabulary knows them all.
    items = pd.read_parquet(data / "item_features" / "v1.parquet", columns=["item_id", "popularity"])
    return users, items.sort_values("popularity", ascending=False, kind="stable")["item_id"].tolist()


CONTEXT = {"hour_bucket": "morning", "weekday": "mon", "device": "mobile", "surface": "home"}


def _score(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/score", json=body, timeout=10)


def test_scores_every_candidate_with_calibrated_probabilities(topology: dict, demo_env: dict[str, str]) -> None:
    users, items = _users_and_items(demo_env)
    candidates = items[:50]
    r = _score(topology["ctr"], {"user_id": users[0], "candidates": candidates, "context": CONTEXT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "ctr-ssr" and body["model_version"] == 1 and body["degraded"] is False
    assert body["feature_versions"] == ["user_profile@v1", "item_features@v1"]
    assert sorted(i["item_id"] for i in body["items"]) == sorted(candidates)  # every candidate, once
    probs = [i["probability"] for i in body["items"]]
    assert probs == sorted(probs, reverse=True) and all(0.0 < p < 1.0 for p in probs)
    assert len(set(probs)) > 10, "the ranker must tell candidates apart"
    assert body["ignored_context"] == [] and body["defaulted_fields"] == {}
    # The same request pinned to version 1 answers the same.
    pinned = _score(
        topology["ctr"], {"user_id": users[0], "candidates": candidates, "context": CONTEXT, "model_version": "1"}
    )
    assert pinned.json()["items"] == body["items"]


def test_context_changes_scores_and_unknown_context_is_counted(topology: dict, demo_env: dict[str, str]) -> None:
    users, items = _users_and_items(demo_env)
    base = {"user_id": users[1], "candidates": items[:30]}
    morning = _score(topology["ctr"], {**base, "context": CONTEXT}).json()
    evening = _score(topology["ctr"], {**base, "context": {**CONTEXT, "hour_bucket": "evening", "device": "desktop"}})
    p_morning = {i["item_id"]: i["probability"] for i in morning["items"]}
    p_evening = {i["item_id"]: i["probability"] for i in evening.json()["items"]}
    assert any(abs(p_morning[i] - p_evening[i]) > 1e-4 for i in p_morning), "context fields must matter"

    def ignored_total(field: str) -> float:
        text = httpx.get(f"{topology['ctr']}/metrics").text
        m = re.search(rf'recsys_ctr_ignored_context_total{{field="{field}"}} ([0-9.e+]+)', text)
        return float(m.group(1)) if m else 0.0

    before = ignored_total("browser")
    r = _score(topology["ctr"], {**base, "context": {**CONTEXT, "browser": "firefox"}}).json()
    assert r["ignored_context"] == ["browser"]
    assert ignored_total("browser") == before + 1
    # A known field left out, or a value never seen in training: the field's default, reported per field.
    partial = _score(topology["ctr"], {**base, "context": {"device": "smart-fridge"}}).json()
    assert partial["defaulted_fields"]["device"] == 30
    assert {"hour_bucket", "weekday", "surface"} <= set(partial["defaulted_fields"])
    # An unknown user is still scored (user fields at their defaults), not refused.
    stranger = _score(topology["ctr"], {**base, "user_id": "never-seen", "context": CONTEXT}).json()
    assert {"user_id", "top_topic", "activity"} <= set(stranger["defaulted_fields"])


def test_bad_input_is_4xx_with_a_message(topology: dict, demo_env: dict[str, str]) -> None:
    users, items = _users_and_items(demo_env)
    too_many = _score(topology["ctr"], {"user_id": users[0], "candidates": [f"i{n}" for n in range(1001)]})
    assert too_many.status_code == 422
    assert "at most 1000" in too_many.json()["error"]["message"]
    cases = [
        ({"user_id": users[0], "candidates": []}, 422, "candidates"),
        ({"user_id": "", "candidates": items[:2]}, 422, "user_id"),
        ({"user_id": users[0], "candidates": items[:2], "bogus": 1}, 422, "bogus"),
        ({"user_id": users[0], "candidates": items[:2], "context": {"x": [1]}}, 422, "context"),
        ({"user_id": users[0], "candidates": items[:2], "model_version": "v99"}, 404, "ctr-ssr"),
    ]
    for body, status, word in cases:
        r = _score(topology["ctr"], body)
        assert r.status_code == status, (body, r.text)
        assert word in r.json()["error"]["message"], (body, r.text)


def _recs(url: str, user: str, surface: str, headers: dict | None = None) -> dict:
    r = httpx.post(
        f"{url}/v1/recommendations",
        json={"user_id": user, "surface": surface, "k": 10, "context": CONTEXT},
        headers=headers or {},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_two_stage_surface_reranks_the_sequential_candidates(topology: dict, demo_env: dict[str, str]) -> None:
    users, _ = _users_and_items(demo_env)
    user = users[2]
    plain = _recs(topology["url"], user, "home")
    ranked = _recs(topology["url"], user, "home-ranked")
    assert ranked["degraded"] is False and ranked["model"] == "ctr-ssr"
    assert [s["model"] for s in ranked["stages"]] == ["seq-lte", "ctr-ssr"]
    assert set(ranked["feature_versions"]) == {"lte_avg@v1", "recent_items@v1", "user_profile@v1", "item_features@v1"}
    # The ranker re-orders the first stage's top 100: its answer comes from them, by probability.
    first_100 = httpx.post(
        f"{topology['url']}/v1/recommendations", json={"user_id": user, "surface": "home", "k": 100}
    ).json()
    pool = {i["item_id"] for i in first_100["items"]}
    ids = [i["item_id"] for i in ranked["items"]]
    assert len(ids) == 10 and set(ids) <= pool
    assert ids != [i["item_id"] for i in plain["items"]], "re-ranking changed nothing"
    scores = [i["score"] for i in ranked["items"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert plain["stages"] is None


def test_two_stage_variant_in_an_experiment_with_pinned_ranker(topology: dict, demo_env: dict[str, str]) -> None:
    users, _ = _users_and_items(demo_env)
    url, key = topology["url"], "rerank-ab"
    pipeline = {
        "service": "sequential",
        "model": "seq-lte",
        "ref": "champion",
        "rerank": {"service": "ctr", "model": "ctr-ssr", "ref": "v1", "candidates": 50},
    }
    spec = {
        "key": key,
        "surface": "home",
        "variants": [
            {
                "key": "control",
                "weight": 0.5,
                "target": {"service": "sequential", "model": "seq-lte", "ref": "champion"},
            },
            {"key": "reranked", "weight": 0.5, "target": pipeline},
        ],
        "status": "running",
    }
    # The ranker's pin is validated like any target's: a version that does not exist is refused.
    bad = {
        **spec,
        "variants": [
            spec["variants"][0],
            {**spec["variants"][1], "target": {**pipeline, "rerank": {**pipeline["rerank"], "ref": "v7"}}},
        ],
    }
    r = httpx.post(f"{url}/v1/experiments", json=bad, headers=AUTH)
    assert r.status_code == 422 and "v7" in r.json()["error"]["message"], r.text
    r = httpx.post(f"{url}/v1/experiments", json=spec, headers=AUTH)
    assert r.status_code == 201, r.text
    try:
        for _ in range(50):
            forced = _recs(url, users[3], "home", {"X-Force-Variant": f"{key}=reranked"})
            if forced["experiment"] == key:
                break
        assert forced["variant"] == "reranked" and [s["model"] for s in forced["stages"]] == ["seq-lte", "ctr-ssr"]
        control = _recs(url, users[3], "home", {"X-Force-Variant": f"{key}=control"})
        assert control["variant"] == "control" and control["stages"] is None
    finally:
        httpx.post(f"{url}/v1/experiments/{key}/stop", headers=AUTH)


def test_ranker_down_gives_the_first_stage_order_flagged(topology: dict, demo_env: dict[str, str]) -> None:
    users, _ = _users_and_items(demo_env)
    stop_service(topology["procs"]["ctr"])
    try:
        body = _recs(topology["url"], users[4], "home-ranked")
        assert body["degraded"] is True and "re-ranking skipped" in body["degraded_reason"]
        assert len(body["items"]) == 10 and [s["model"] for s in body["stages"]] == ["seq-lte"]
    finally:
        topology["procs"]["ctr"] = start_service("ctr", topology["ctr_port"], topology["env"])
    # It recovers by itself once the ranker is back (the breaker half-opens after 0.5 s here).
    deadline = time.monotonic() + 10
    while (body := _recs(topology["url"], users[4], "home-ranked"))["degraded"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert body["degraded"] is False and len(body["stages"]) == 2
