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
from tests.conftest import free_port

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _start(app: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
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
    raise RuntimeError(f"{app} did not start: " + proc.stderr.read().decode()[-2000:])


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
    state["seq"] = _start("services.sequential.app:app_factory", seq_port, env)
    state["gw"] = _start("services.gateway.app:app_factory", gw_port, env)
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
    topology["gw"] = _start("services.gateway.app:app_factory", topology["gw_port"], topology["env"])
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
    topology["seq"] = _start("services.sequential.app:app_factory", topology["seq_port"], topology["env"])
    deadline = time.time() + 10
    while time.time() < deadline:
        body = _rec(url, "u001").json()
        if not body["degraded"]:
            break
        time.sleep(0.2)
    assert body["degraded"] is False and body["model"] == "seq-lte"
