"""Gateway resilience with real stores: Redis dying under traffic, state surviving restarts on PostgreSQL.

Each test runs its own sequential service and gateway processes on a private copy of the session's demo
data, so what they break or change (the online store, the registry, the experiment database) is theirs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from feature_store.config import REPO_ROOT
from tests.conftest import free_port, private_postgres_database
from tests.e2e.conftest import RECSYS
from tests.e2e.helpers import (
    AUTH,
    TOKEN,
    RedisServer,
    copy_demo_data,
    drive_load,
    register_copy,
    start_service,
    stop_service,
)

USERS = [f"u{i:03d}" for i in range(0, 400, 3)]  # demo users: every one has features online


def _topology_env(base: dict[str, str], data_dir: Path, seq_port: int, **extra: str) -> dict[str, str]:
    env = {
        **base,
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS_ADMIN_TOKEN": TOKEN,
        "RECSYS_SERVICES": json.dumps({"sequential": f"http://127.0.0.1:{seq_port}"}),
        "RECSYS_BREAKER_RESET_S": "0.5",
        **extra,
    }
    for var in ("REDIS_URL", "RECSYS_REGISTRY_URL", "RECSYS_GATEWAY_DB_URL"):
        if var not in extra:
            env.pop(var, None)
    return env


def _rec(url: str, user: str) -> dict:
    r = httpx.post(f"{url}/v1/recommendations", json={"user_id": user, "surface": "home", "k": 5}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# --- the online store (Redis) dies under traffic ---------------------------------------------------------


@pytest.fixture
def redis_topology(demo_env: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    """Sequential service + gateway reading features from a private redis-server this test may kill."""
    data_dir = copy_demo_data(demo_env, tmp_path / "data", online=False)  # no SQLite online store to fall on
    server = RedisServer(free_port(), tmp_path / "redis").start()
    seq_port, gw_port = free_port(), free_port()
    # A 2 s gateway timeout (default 0.5 s): on a loaded 2-core box a slow answer must not pass for an outage.
    # A service hanging on the dead Redis would still show: the gateway, not the service, would answer.
    env = _topology_env(
        demo_env,
        data_dir,
        seq_port,
        RECSYS_ONLINE_STORE="redis",
        REDIS_URL=server.url,
        RECSYS_REQUEST_TIMEOUT_S="2.0",
    )
    procs: dict[str, subprocess.Popen] = {}
    try:
        # The demo's pinned feature versions, materialized by Feast into this Redis (as a user would).
        out = subprocess.run(
            [RECSYS, "features", "materialize", "lte_avg@v1", "recent_items@v1"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        client = redis.Redis.from_url(server.url)
        assert client.dbsize() >= len(USERS)
        client.save()  # the snapshot a restarted server loads
        client.close()
        procs["seq"] = start_service("sequential", seq_port, env)
        procs["gw"] = start_service("gateway", gw_port, env)
        yield {"url": f"http://127.0.0.1:{gw_port}", "redis": server, "env": env}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop_service(proc)
        server.kill()


@pytest.mark.slow
def test_redis_outage_under_traffic_degrades_without_5xx_then_recovers(redis_topology: dict) -> None:
    """40 req/s for 12 s; Redis is SIGKILLed at ~3 s and restarted (same port, same data dir) at ~6 s.

    Every answer is a 200. Answers sent while Redis is down are flagged (the service's popularity
    fallback, ``degraded`` at the gateway) and come from the service itself, not from the gateway
    giving up on a hung service. Model answers resume within 3 s of Redis being back.
    """
    url, server = redis_topology["url"], redis_topology["redis"]
    assert _rec(url, USERS[0])["degraded"] is False  # served from Redis
    results: list[dict] = []
    loader = threading.Thread(target=lambda: results.extend(asyncio.run(drive_load(url, USERS, 12.0, 40.0))))
    loader.start()
    time.sleep(3.0)
    t_kill = time.monotonic()
    server.kill()
    time.sleep(3.0)
    t_restart = time.monotonic()
    server.start()
    t_back = time.monotonic()
    loader.join(timeout=120)
    assert not loader.is_alive()

    assert len(results) > 300, len(results)
    bad = [x for x in results if x["status"] != 200]
    assert not bad, bad[:3]  # no 5xx, no refused or timed-out request

    before = [x for x in results if x["t"] < t_kill - 0.2]
    outage = [x for x in results if t_kill + 0.05 < x["t"] < t_restart]
    after = [x for x in results if x["t"] > t_back + 3.0]
    assert len(before) > 60 and len(outage) > 60 and len(after) > 60, (len(before), len(outage), len(after))
    assert not [x for x in before if x["degraded"]], [x for x in before if x["degraded"]][:3]
    assert all(x["degraded"] and len(x["items"]) == 5 for x in outage), [x for x in outage if not x["degraded"]][:3]
    # The service answered (quickly) with its flagged fallback: Redis being down hangs nothing.
    from_service = [x for x in outage if (x["degraded_reason"] or "").startswith("feature store unavailable")]
    assert len(from_service) >= 0.9 * len(outage), sorted({x["degraded_reason"] for x in outage})
    assert all(x["model"] == "seq-lte" for x in from_service)
    # Recovery: model answers again within 3 s of Redis being back, and from then on only model answers.
    recovered = next((x for x in results if x["t"] > t_back and not x["degraded"]), None)
    assert recovered is not None and recovered["t"] - t_back < 3.0
    assert all(not x["degraded"] and x["model"] == "seq-lte" for x in after), [x for x in after if x["degraded"]][:3]


# --- experiments and aliases on PostgreSQL survive a gateway restart ---------------------------------------


@pytest.fixture
def pg_topology(demo_env: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    """Sequential service + gateway whose registry and experiment store are a private PostgreSQL database."""
    demo_dir = Path(demo_env["RECSYS_DATA_DIR"])
    data_dir = copy_demo_data(demo_env, tmp_path / "data", models=False)
    with private_postgres_database() as db_url:
        from models.registry import ModelRegistry

        refs = ["lte_avg@v1", "recent_items@v1"]
        assert register_copy(data_dir, refs, registry_url=db_url, source_data_dir=demo_dir) == 1
        with ModelRegistry(url=db_url, data_dir=data_dir) as registry:
            registry.set_alias("seq-lte", "champion", 1, actor="setup", reason="first champion")
        assert register_copy(data_dir, refs, registry_url=db_url) == 2
        seq_port, gw_port = free_port(), free_port()
        env = _topology_env(demo_env, data_dir, seq_port, RECSYS_REGISTRY_URL=db_url, RECSYS_GATEWAY_DB_URL=db_url)
        state: dict = {"env": env, "db_url": db_url, "data_dir": data_dir, "gw_port": gw_port}
        state["url"] = f"http://127.0.0.1:{gw_port}"
        state["seq"] = start_service("sequential", seq_port, env)
        try:
            state["gw"] = start_service("gateway", gw_port, env)
            yield state
        finally:
            for key in ("gw", "seq"):
                if key in state and state[key].poll() is None:
                    stop_service(state[key])


def test_experiment_and_alias_history_survive_a_gateway_restart_on_postgres(pg_topology: dict) -> None:
    import sqlalchemy as sa

    url, key = pg_topology["url"], "pg-history"
    target = {"service": "sequential", "model": "seq-lte", "ref": "champion"}
    exp = {
        "key": key,
        "surface": "home",
        "status": "running",
        "variants": [
            {"key": "control", "weight": 0.5, "target": target},
            {"key": "treatment", "weight": 0.5, "target": {**target, "ref": "2"}},
        ],
    }
    alice, bob = {**AUTH, "X-Actor": "alice"}, {**AUTH, "X-Actor": "bob"}
    r = httpx.post(f"{url}/v1/experiments", json=exp, headers=alice)
    assert r.status_code == 201, r.text
    r = httpx.patch(f"{url}/v1/experiments/{key}", json={"version": 1, "coverage": 0.5, "reason": "ramp"}, headers=bob)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{url}/v1/experiments/{key}/pause", json={"version": 2, "reason": "looks odd"}, headers=alice)
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text
    r = httpx.post(f"{url}/v1/models/seq-lte/deploy", json={"version": 2, "reason": "v2 wins"}, headers=bob, timeout=60)
    assert r.status_code == 200 and r.json()["to_version"] == 2, r.text

    def snapshot() -> tuple[dict, list, dict]:
        experiment = httpx.get(f"{url}/v1/experiments/{key}", headers=AUTH)
        history = httpx.get(f"{url}/v1/experiments/{key}/history", headers=AUTH)
        model = httpx.get(f"{url}/v1/models/seq-lte", headers=AUTH)
        assert experiment.status_code == history.status_code == model.status_code == 200
        return experiment.json(), history.json()["events"], model.json()

    experiment, history, model = snapshot()
    assert [(e["action"], e["actor"], e["reason"]) for e in history] == [
        ("pause", "alice", "looks odd"),
        ("update", "bob", "ramp"),
        ("create", "alice", ""),
    ]
    assert (experiment["version"], experiment["status"], experiment["coverage"]) == (3, "paused", 0.5)
    assert model["aliases"] == {"champion": 2}
    assert [(h["from_version"], h["to_version"], h["actor"]) for h in model["alias_history"]] == [
        (1, 2, "bob"),
        (None, 1, "setup"),
    ]
    # It is all in PostgreSQL (no SQLite file was quietly used instead).
    engine = sa.create_engine(pg_topology["db_url"])
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM experiment_events WHERE key = :k"), {"k": key}) == 3
        assert conn.scalar(sa.text("SELECT count(*) FROM alias_events WHERE name = 'seq-lte'")) == 2
    engine.dispose()
    assert not (pg_topology["data_dir"] / "gateway.db").exists()
    assert not (pg_topology["data_dir"] / "registry.db").exists()

    stop_service(pg_topology["gw"])
    pg_topology["gw"] = start_service("gateway", pg_topology["gw_port"], pg_topology["env"])
    assert snapshot() == (experiment, history, model)  # every field, ids and timestamps included
    assert _rec(url, "u001")["model_version"] == 2  # the deploy is still in force

    # The new process rolls back from the history it read back: to v1, with the old entries intact.
    r = httpx.post(f"{url}/v1/models/seq-lte/rollback", json={"reason": "after restart"}, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["to_version"] == 1, r.text
    after = httpx.get(f"{url}/v1/models/seq-lte", headers=AUTH).json()["alias_history"]
    assert after[1:] == model["alias_history"] and after[0]["reason"] == "after restart"
