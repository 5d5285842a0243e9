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
import pytest

from feature_store.config import REPO_ROOT
from services.commands import service_command
from tests.conftest import free_port

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _start(name: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", *service_command(name, "127.0.0.1", port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not start: " + proc.stderr.read().decode()[-2000:])


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


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
    state["seq"] = _start("sequential", seq_port, env)
    state["gw"] = _start("gateway", gw_port, env)
    state["url"] = f"http://127.0.0.1:{gw_port}"
    yield state
    for key in ("gw", "seq"):
        if state[key].poll() is None:
            _stop(state[key])


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


def _experiment(key: str, weights: tuple[float, float], coverage: float = 1.0) -> dict:
    target = {"service": "sequential", "model": "seq-lte", "ref": "champion"}
    return {
        "key": key,
        "surface": "home",
        "status": "running",
        "coverage": coverage,
        "variants": [
            {"key": "control", "weight": weights[0], "target": target},
            {"key": "treatment", "weight": weights[1], "target": {**target, "ref": "1"}},
        ],
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
    _stop(topology["gw"])
    topology["gw"] = _start("gateway", topology["gw_port"], topology["env"])
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


def test_service_down_gives_degraded_answers_then_recovers(topology: dict) -> None:
    url = topology["url"]
    _stop(topology["seq"])
    statuses = []
    for i in range(30):
        r = _rec(url, f"down-{i}")
        statuses.append(r.status_code)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is True and len(body["items"]) == 5
    assert set(statuses) == {200}
    topology["seq"] = _start("sequential", topology["seq_port"], topology["env"])
    deadline = time.time() + 10
    while time.time() < deadline:
        body = _rec(url, "u001").json()
        if not body["degraded"]:
            break
        time.sleep(0.2)
    assert body["degraded"] is False and body["model"] == "seq-lte"


def _register_copy(data_dir: Path, feature_refs: list[str]) -> int:
    """A new version of seq-lte with v1's artifact (same weights) pinning ``feature_refs``."""
    import shutil
    import tempfile

    from feature_store.config import FeatureStoreSettings
    from models.registry import ModelRegistry

    settings = FeatureStoreSettings(data_dir=data_dir)
    registry = ModelRegistry.from_settings(settings)
    v1 = registry.get("seq-lte", 1)
    with tempfile.TemporaryDirectory() as tmp:
        art = Path(tmp) / "artifact"
        shutil.copytree(v1.path, art, ignore=shutil.ignore_patterns("registry_manifest.json"))
        for p in art.iterdir():
            p.chmod(0o644)
        m = registry.register(
            family="sequential",
            name="seq-lte",
            artifact_dir=art,
            feature_refs=feature_refs,
            training=v1.manifest.training,
            metrics=dict(v1.manifest.metrics),
            params=dict(v1.manifest.params),
        )
    registry.close()
    return int(m.version)


async def _load(url: str, users: list[str], seconds: float, rate: float) -> list[dict]:
    out: list[dict] = []
    async with httpx.AsyncClient(timeout=10) as client:
        start = time.perf_counter()
        tasks = []
        i = 0
        while time.perf_counter() - start < seconds:
            body = {"user_id": users[i % len(users)], "surface": "home", "k": 5}

            async def one(b: dict = body) -> None:
                try:
                    r = await client.post(f"{url}/v1/recommendations", json=b)
                    out.append({"status": r.status_code, **(r.json() if r.status_code == 200 else {})})
                except httpx.HTTPError as exc:
                    out.append({"status": -1, "error": str(exc)})

            tasks.append(asyncio.create_task(one()))
            i += 1
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    return out


def test_deploy_and_rollback_under_load_with_zero_failed_requests(topology: dict) -> None:
    import threading

    url, env = topology["url"], topology["env"]
    data_dir = Path(env["RECSYS_DATA_DIR"])
    v2 = _register_copy(data_dir, ["lte_avg@v1", "recent_items@v1"])
    users = [f"u{i:03d}" for i in range(0, 400, 7)]
    results: list[dict] = []
    loader = threading.Thread(target=lambda: results.extend(asyncio.run(_load(url, users, 8.0, 40.0))))
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

    import pandas as pd

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
    v3 = _register_copy(data_dir, [spec.ref, "recent_items@v1"])
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
    port = free_port()
    proc = _start("embedded", port, demo_env)
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/recommendations", json={"user_id": "u001", "surface": "home", "k": 5}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is False and body["model"] == "seq-lte" and len(body["items"]) == 5
        assert body["feature_versions"] == ["lte_avg@v1", "recent_items@v1"]
    finally:
        _stop(proc)
