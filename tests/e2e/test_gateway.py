"""Gateway in microservice mode: real gateway and sequential processes on loopback."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from feature_store.config import REPO_ROOT
from tests.conftest import free_port
from tests.e2e.helpers import AUTH, TOKEN, drive_load, register_copy, start_service, stop_service


@pytest.fixture(scope="module")
def topology(demo_env: dict[str, str]) -> Iterator[dict]:
    seq_port, gw_port = free_port(), free_port()
    env = {
        **demo_env,
        "RECSYS_ADMIN_TOKEN": TOKEN,
        "RECSYS_SERVICES": json.dumps({"sequential": f"http://127.0.0.1:{seq_port}"}),
        "RECSYS_BREAKER_RESET_S": "0.5",
    }
    state = {"env": env, "seq_port": seq_port, "gw_port": gw_port}
    state["seq"] = start_service("sequential", seq_port, env)
    state["gw"] = start_service("gateway", gw_port, env)
    state["url"] = f"http://127.0.0.1:{gw_port}"
    yield state
    for key in ("gw", "seq"):
        if state[key].poll() is None:
            stop_service(state[key])


def _rec(url: str, user: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/recommendations", json={"user_id": user, "surface": "home", "k": 5}, headers=headers or {}, timeout=5
    )


def test_default_route_without_experiments(topology: dict) -> None:
    r = _rec(topology["url"], "u001")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["experiment"] is None and body["model"] == "seq-lte" and body["model_version"] == 1
    assert body["degraded"] is False
    # An unknown user is answered by the service's flagged popularity fallback, passed on as degraded.
    unknown = _rec(topology["url"], "nobody-at-all").json()
    assert unknown["degraded"] is True and "unknown user" in unknown["degraded_reason"]
    assert body["feature_versions"] == ["lte_avg@v1", "recent_items@v1"]
    r = httpx.post(f"{topology['url']}/v1/recommendations", json={"user_id": "u1", "surface": "nope"})
    assert r.status_code == 404 and "home" in r.json()["error"]["message"]


def test_admin_calls_need_the_token(topology: dict) -> None:
    url = f"{topology['url']}/v1/experiments"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(url, headers=AUTH).status_code == 200


ARMS = ("control", "treatment", "treatment-2")
ARM_REFS = ("champion", "1", "v1")  # the same model version named three ways: a distinct target per arm


def _experiment(key: str, weights: tuple[float, ...], coverage: float = 1.0, **extra: object) -> dict:
    target = {"service": "sequential", "model": "seq-lte"}
    return {
        "key": key,
        "surface": "home",
        "status": "running",
        "coverage": coverage,
        "variants": [
            {"key": arm, "weight": w, "target": {**target, "ref": ref}}
            for arm, ref, w in zip(ARMS, ARM_REFS, weights, strict=False)
        ],
        **extra,
    }


async def _assign_many(url: str, users: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    sem = asyncio.Semaphore(32)
    async with httpx.AsyncClient(timeout=10) as client:

        async def one(u: str) -> None:
            async with sem:
                r = await client.post(f"{url}/v1/recommendations", json={"user_id": u, "surface": "home", "k": 1})
                assert r.status_code == 200, r.text
                out[u] = r.json()["variant"]

        await asyncio.gather(*(one(u) for u in users))
    return out


def test_split_stickiness_forcing_and_validation(topology: dict) -> None:
    url = topology["url"]
    bad = _experiment("bad-weights", (0.5, 0.6))
    r = httpx.post(f"{url}/v1/experiments", json=bad, headers=AUTH)
    assert r.status_code == 422 and "sum" in r.json()["error"]["message"]
    unknown = _experiment("bad-model", (0.5, 0.5))
    unknown["variants"][1]["target"]["ref"] = "v42"
    r = httpx.post(f"{url}/v1/experiments", json=unknown, headers=AUTH)
    assert r.status_code == 422 and "seq-lte" in r.json()["error"]["message"]

    r = httpx.post(f"{url}/v1/experiments", json=_experiment("home-ab", (0.3, 0.7)), headers=AUTH)
    assert r.status_code == 201, r.text
    assert httpx.post(f"{url}/v1/experiments", json=_experiment("home-ab", (0.3, 0.7)), headers=AUTH).status_code == 409
    time.sleep(1.0)  # every replica sees a change within 1 s
    n = 3000
    users = [f"split-{i}" for i in range(n)]
    assigned = asyncio.run(_assign_many(url, users))
    counts = Counter(assigned.values())
    p = 0.7
    tolerance = 4 * math.sqrt(p * (1 - p) / n)  # 4 standard errors of a binomial proportion
    assert abs(counts["treatment"] / n - p) < tolerance, counts

    # QA forcing through the header.
    r = _rec(url, users[0], headers={"X-Force-Variant": "home-ab=control"})
    assert r.json()["variant"] == "control"
    assert _rec(url, users[0], headers={"X-Force-Variant": "garbage"}).status_code == 400

    # Sticky across a gateway restart (a new process reads assignments from the database).
    sample = users[:200]
    stop_service(topology["gw"])
    topology["gw"] = start_service("gateway", topology["gw_port"], topology["env"])
    again = asyncio.run(_assign_many(url, sample))
    assert all(again[u] == assigned[u] for u in sample)

    # Exposures were logged for analysis.
    log_path = Path(topology["env"]["RECSYS_DATA_DIR"]) / "exposures.jsonl"
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert sum(1 for x in lines if x["experiment"] == "home-ab") >= n
    history = httpx.get(f"{url}/v1/experiments/home-ab/history", headers=AUTH).json()["events"]
    assert history[-1]["action"] == "create"
    r = httpx.post(f"{url}/v1/experiments/home-ab/stop", json={}, headers=AUTH)
    assert r.status_code == 200


async def _assignments(url: str, users: list[str]) -> dict[str, dict]:
    """``POST /v1/assignments`` for every user, 32 in flight; user -> {experiment, variant, target}."""
    out: dict[str, dict] = {}
    sem = asyncio.Semaphore(32)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(u: str) -> None:
            async with sem:
                body = {"user_id": u, "surface": "home", "context": {}}
                r = await client.post(f"{url}/v1/assignments", json=body)
                assert r.status_code == 200, r.text
                out[u] = r.json()

        await asyncio.gather(*(one(u) for u in users))
    return out


def _wait_until_live(url: str, key: str) -> None:
    """Until the gateway's experiment cache has ``key`` running (a forced assignment names it)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        r = httpx.post(
            f"{url}/v1/assignments",
            json={"user_id": "cache-probe", "surface": "home"},
            headers={"X-Force-Variant": f"{key}=control"},
        )
        if r.status_code == 200 and r.json()["experiment"] == key:
            return
        time.sleep(0.1)
    raise AssertionError(f"experiment {key} not live in the gateway after 5 s")


def _exposures(data_dir: str, key: str) -> int:
    path = Path(data_dir) / "exposures.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for x in lines if json.loads(x)["experiment"] == key)


@pytest.mark.slow
def test_split_over_10k_users_matches_the_weights(topology: dict) -> None:
    """10,000 users assigned through HTTP; each arm's count is within 4 binomial standard deviations
    (4 * sqrt(n p (1 - p)): 200 users for p=0.5, 183 for 0.3, 160 for 0.2) of n * weight. A correct
    hash misses that band with probability ~6e-5 per arm; a wrong split (e.g. weights applied in a
    different order, or coverage applied twice) lands far outside it."""
    url, key = topology["url"], "split-10k"
    weights = dict(zip(ARMS, (0.5, 0.3, 0.2), strict=True))
    targets = {
        arm: {"service": "sequential", "model": "seq-lte", "ref": ref, "rerank": None}
        for arm, ref in zip(ARMS, ARM_REFS, strict=True)
    }
    r = httpx.post(f"{url}/v1/experiments", json=_experiment(key, tuple(weights.values())), headers=AUTH)
    assert r.status_code == 201, r.text
    try:
        _wait_until_live(url, key)
        n = 10_000
        users = [f"w{i:05d}" for i in range(n)]
        assigned = asyncio.run(_assignments(url, users))
        assert {a["experiment"] for a in assigned.values()} == {key}  # coverage 1: everyone is in
        assert all(a["target"] == targets[a["variant"]] for a in assigned.values())
        counts = Counter(a["variant"] for a in assigned.values())
        for arm, p in weights.items():
            tolerance = 4 * math.sqrt(n * p * (1 - p))
            assert abs(counts[arm] - n * p) < tolerance, (arm, counts, tolerance)

        # Assigning logged no exposure; serving does, and serves the arm the assignment named.
        sample = users[:100]
        assert _exposures(topology["env"]["RECSYS_DATA_DIR"], key) == 0
        served = asyncio.run(_assign_many(url, sample))
        assert all(served[u] == assigned[u]["variant"] for u in sample)
        deadline = time.time() + 5
        while _exposures(topology["env"]["RECSYS_DATA_DIR"], key) < len(sample) and time.time() < deadline:
            time.sleep(0.1)
        # The forced header works on assignments too (and still logs nothing).
        user = next(u for u in users if assigned[u]["variant"] == "control")
        forced = httpx.post(
            f"{url}/v1/assignments",
            json={"user_id": user, "surface": "home"},
            headers={"X-Force-Variant": f"{key}=treatment-2"},
        ).json()
        assert forced["variant"] == "treatment-2" and forced["target"] == targets["treatment-2"]
        time.sleep(0.3)
        assert _exposures(topology["env"]["RECSYS_DATA_DIR"], key) == len(sample)
        r = httpx.post(f"{url}/v1/assignments", json={"user_id": user, "surface": "nope"})
        assert r.status_code == 404 and "home" in r.json()["error"]["message"]
    finally:
        assert httpx.post(f"{url}/v1/experiments/{key}/stop", json={}, headers=AUTH).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("sticky", [True, False], ids=["sticky", "hash-only"])
def test_raising_coverage_keeps_assigned_users_in_place(topology: dict, sticky: bool) -> None:
    """Coverage 0.3 -> 0.8 through the experiments API: every user who was in keeps their variant; users
    who were out may now be in. Without sticky bucketing the hash ranges alone must guarantee it."""
    url, key = topology["url"], f"coverage-ramp-{'sticky' if sticky else 'hash'}"
    exp = _experiment(key, (0.5, 0.5), coverage=0.3, sticky_bucketing=sticky)
    r = httpx.post(f"{url}/v1/experiments", json=exp, headers=AUTH)
    assert r.status_code == 201, r.text
    try:
        _wait_until_live(url, key)
        n = 2000
        users = [f"cov-{i:04d}" for i in range(n)]
        before = asyncio.run(_assignments(url, users))
        inside = {u: a["variant"] for u, a in before.items() if a["experiment"] == key}
        outside = [u for u in users if u not in inside]
        assert all(before[u]["variant"] is None for u in outside)

        def within(count: int, p: float) -> bool:  # 4 binomial standard deviations
            return abs(count - n * p) < 4 * math.sqrt(n * p * (1 - p))

        assert within(len(inside), 0.3), len(inside)

        r = httpx.patch(
            f"{url}/v1/experiments/{key}", json={"version": 1, "coverage": 0.8, "reason": "ramp up"}, headers=AUTH
        )
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        deadline = time.time() + 5  # the gateway sees the change within a second
        while time.time() < deadline:
            probe = asyncio.run(_assignments(url, outside[:50]))
            if any(a["experiment"] == key for a in probe.values()):
                break
            time.sleep(0.2)
        after = asyncio.run(_assignments(url, users))
        moved = {u: (v, after[u]["variant"]) for u, v in inside.items() if after[u]["variant"] != v}
        assert not moved, list(moved.items())[:5]
        newly_in = [u for u in outside if after[u]["experiment"] == key]
        assert within(len(inside) + len(newly_in), 0.8), (len(inside), len(newly_in))
        # The serving path agrees for users who were in before the ramp.
        sample = list(inside)[:50]
        served = asyncio.run(_assign_many(url, sample))
        assert all(served[u] == inside[u] for u in sample)
        history = httpx.get(f"{url}/v1/experiments/{key}/history", headers=AUTH).json()["events"]
        assert history[0]["action"] == "update" and history[0]["reason"] == "ramp up"
        assert (history[0]["before"]["coverage"], history[0]["after"]["coverage"]) == (0.3, 0.8)
    finally:
        assert httpx.post(f"{url}/v1/experiments/{key}/stop", json={}, headers=AUTH).status_code == 200


def test_service_down_gives_degraded_answers_then_recovers(topology: dict) -> None:
    url = topology["url"]
    stop_service(topology["seq"])
    statuses = []
    for i in range(30):
        r = _rec(url, f"down-{i}")
        statuses.append(r.status_code)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is True and len(body["items"]) == 5
    assert set(statuses) == {200}
    topology["seq"] = start_service("sequential", topology["seq_port"], topology["env"])
    deadline = time.time() + 10
    while time.time() < deadline:
        body = _rec(url, "u001").json()
        if not body["degraded"]:
            break
        time.sleep(0.2)
    assert body["degraded"] is False and body["model"] == "seq-lte"


def test_deploy_and_rollback_under_load_with_zero_failed_requests(topology: dict) -> None:
    import threading

    url, env = topology["url"], topology["env"]
    data_dir = Path(env["RECSYS_DATA_DIR"])
    v2 = register_copy(data_dir, ["lte_avg@v1", "recent_items@v1"])
    users = [f"u{i:03d}" for i in range(0, 400, 7)]
    results: list[dict] = []
    loader = threading.Thread(target=lambda: results.extend(asyncio.run(drive_load(url, users, 8.0, 40.0))))
    loader.start()
    time.sleep(1.5)
    r = httpx.post(f"{url}/v1/models/seq-lte/deploy", json={"version": v2, "reason": "test"}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["to_version"] == v2 and r.json()["ok"]
    time.sleep(2.5)
    r = httpx.post(f"{url}/v1/models/seq-lte/rollback", json={}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["to_version"] == 1
    loader.join(timeout=60)
    assert len(results) > 200
    failed = [x for x in results if x["status"] != 200 or x.get("degraded")]
    assert not failed, failed[:3]
    assert {x["model_version"] for x in results} == {1, v2}

    # A version whose pinned features are not online cannot be rolled back to.
    from datetime import timedelta

    from feature_store.build import lte_fields, window_of, write_version
    from feature_store.config import FeatureStoreSettings

    frame = pd.read_parquet(data_dir / "offline" / "lte_avg" / "v1.parquet")
    spec = write_version(
        FeatureStoreSettings(data_dir=data_dir),
        view="lte_avg",
        entity="user",
        frame=frame,
        fields=lte_fields(64),
        window=window_of(
            frame.event_timestamp.max().to_pydatetime(), timedelta(days=7), timedelta(days=365), None, None
        ),
        dataset="synthetic",
        basis_fingerprint=None,
    )
    v3 = register_copy(data_dir, [spec.ref, "recent_items@v1"])
    r = httpx.post(f"{url}/v1/models/seq-lte/rollback", json={"to_version": v3}, headers=AUTH, timeout=60)
    assert r.status_code == 409
    assert f"{spec.ref} (offline)" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/models/seq-lte/deploy", json={"version": v3}, headers=AUTH, timeout=60)
    assert r.status_code == 409 and f"{spec.ref} is offline" in r.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/models/seq-lte/deploy", json={"version": v2}).status_code == 401

    # The CLI goes through the same code.
    out = subprocess.run(
        [str(Path(sys.executable).parent / "recsys"), "deploy", "seq-lte", str(v2)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["to_version"] == v2
    out = subprocess.run(
        [str(Path(sys.executable).parent / "recsys"), "rollback", "seq-lte"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and json.loads(out.stdout)["to_version"] == 1
    history = httpx.get(f"{url}/v1/models/seq-lte", headers=AUTH).json()["alias_history"]
    assert [h["to_version"] for h in history[:4]] == [1, v2, 1, v2]


def test_embedded_mode_serves_the_same_api_in_one_process(demo_env: dict[str, str]) -> None:
    """The demo's three surfaces from one process: sequential, sequential re-ranked by the CTR model,
    and next basket (its default as-of is the feature snapshot's date: the synthetic data is old)."""
    port = free_port()
    proc = start_service("embedded", port, {**demo_env, "RECSYS_BASKET_DEFAULT_AS_OF": "snapshot"})
    url = f"http://127.0.0.1:{port}/v1/recommendations"
    try:
        r = httpx.post(url, json={"user_id": "u001", "surface": "home", "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is False and body["model"] == "seq-lte" and len(body["items"]) == 5
        assert body["feature_versions"] == ["lte_avg@v1", "recent_items@v1"]

        ranked = httpx.post(url, json={"user_id": "u001", "surface": "home-ranked", "k": 5}).json()
        assert ranked["model"] == "ctr-ssr" and [s["model"] for s in ranked["stages"]] == ["seq-lte", "ctr-ssr"]
        assert ranked["degraded"] is False and len(ranked["items"]) == 5

        history = pd.read_parquet(Path(demo_env["RECSYS_DATA_DIR"]) / "offline" / "purchase_history" / "v1.parquet")
        shopper = str(history["user_id"].iloc[0])
        basket = httpx.post(url, json={"user_id": shopper, "surface": "basket", "k": 5}).json()
        assert basket["model"] == "case" and basket["degraded"] is False, basket
        assert basket["feature_versions"] == ["purchase_history@v1"] and len(basket["items"]) == 5
    finally:
        stop_service(proc)


def _recsys(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "recsys"), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_experiments_cli_and_api_share_one_store_and_its_rules(topology: dict) -> None:
    url, env = topology["url"], topology["env"]
    spec = {**_experiment("cli-made", (0.5, 0.5)), "status": "draft", "surface": "cli-surface"}
    out = _recsys(env, "experiments", "create", json.dumps(spec), "--actor", "carol")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["version"] >= 0

    # The HTTP API sees it and changes it; the CLI sees the API's change in the same history.
    r = httpx.get(f"{url}/v1/experiments/cli-made", headers=AUTH)
    assert r.status_code == 200 and r.json()["surface"] == "cli-surface"
    version = r.json()["version"]
    r = httpx.patch(
        f"{url}/v1/experiments/cli-made",
        json={"version": version, "coverage": 0.4, "reason": "api edit"},
        headers={**AUTH, "X-Actor": "dave"},
    )
    assert r.status_code == 200, r.text
    out = _recsys(env, "experiments", "history", "cli-made")
    assert out.returncode == 0, out.stderr
    actors = [e["actor"] for e in json.loads(out.stdout)]
    assert actors[:2] == ["dave", "carol"]

    # The same validation as the API: a stale version, weights that do not sum, an unknown model.
    out = _recsys(env, "experiments", "update", "cli-made", '{"coverage": 0.9}', "--version", str(version))
    assert out.returncode == 2 and "version" in out.stderr
    bad = {**spec, "key": "cli-bad", "variants": [{**v, "weight": 0.2} for v in spec["variants"]]}
    out = _recsys(env, "experiments", "create", json.dumps(bad))
    assert out.returncode == 2 and "sum" in out.stderr
    ghost = {**spec, "key": "cli-ghost"}
    ghost["variants"] = [{**v, "target": {**v["target"], "model": "ghost"}} for v in spec["variants"]]
    out = _recsys(env, "experiments", "create", json.dumps(ghost))
    assert out.returncode == 2 and "ghost" in out.stderr
    assert httpx.get(f"{url}/v1/experiments/cli-bad", headers=AUTH).status_code == 404

    out = _recsys(env, "experiments", "stop", "cli-made", "--reason", "done")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "stopped"
