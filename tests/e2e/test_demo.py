"""The demo end to end with real processes: `recsys demo build`, then the service under uvicorn."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from feature_store.config import REPO_ROOT
from tests.conftest import free_port
from tests.e2e.conftest import RECSYS
from tests.e2e.helpers import start_service, stop_service


@pytest.fixture(scope="module")
def service(demo_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = start_service("features", port, demo_env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(proc)


def test_versions_listed_and_online(service: str) -> None:
    versions = httpx.get(f"{service}/v1/features/versions").json()
    refs = {v["ref"]: v for v in versions}
    assert {"lte_avg@v1", "lte_ae@v1", "recent_items@v1", "item_features@v1"} <= set(refs)
    assert all(v["status"]["state"] == "online" for v in versions)
    # Both LTE variants and the item content vectors live in the same frozen basis.
    fps = {refs[r]["basis_fingerprint"] for r in ("lte_avg@v1", "lte_ae@v1", "item_features@v1")}
    assert len(fps) == 1 and None not in fps


def test_reads_known_and_unknown_entities(service: str, demo_env: dict[str, str]) -> None:
    import pandas as pd

    frame = pd.read_parquet(Path(demo_env["RECSYS_DATA_DIR"]) / "offline" / "lte_avg" / "v1.parquet")
    user = frame.sort_values("event_timestamp").iloc[-1]["user_id"]
    r = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v1", "entity_ids": [user, "nobody"]})
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert rows[0]["present"] and len(rows[0]["values"]["lte"]) == 64 and rows[0]["values"]["n_items"] > 0
    assert rows[1] == {
        "entity_id": "nobody",
        "present": False,
        "event_timestamp": None,
        "values": {"lte": [0.0] * 64, "n_items": 0},
    }
    r = httpx.post(f"{service}/v1/features/read", json={"ref": "recent_items@v1:item_ids", "entity_ids": [user]})
    assert r.json()["rows"][0]["values"]["item_ids"]


def test_bad_requests_are_4xx_with_a_message(service: str) -> None:
    r = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v9", "entity_ids": ["u1"]})
    assert r.status_code == 404
    assert "lte_avg@v1" in r.json()["error"]["details"]["available"]
    r = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg", "entity_ids": ["u1"]})
    assert r.status_code == 400 and "expected '<view>@v<N>'" in r.json()["error"]["message"]
    r = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v1", "entity_ids": []})
    assert r.status_code == 422 and "entity_ids" in r.json()["error"]["message"]
    r = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v1", "entity_ids": ["x"] * 1001})
    assert r.status_code == 422 and "at most 1000" in r.json()["error"]["message"]
    r = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v1:nope", "entity_ids": ["u1"]})
    assert r.status_code == 400 and "has no feature 'nope'" in r.json()["error"]["message"]
    r = httpx.post(f"{service}/v1/features/read", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_cli_versions_and_status(demo_env: dict[str, str]) -> None:
    import json

    out = subprocess.run(
        [RECSYS, "features", "versions", "--json"], env=demo_env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    versions = {v["view"] + "@v" + str(v["version"]): v for v in json.loads(out.stdout)}
    assert versions["lte_ae@v1"]["status"]["state"] == "online"
    assert versions["lte_avg@v1"]["window"]["lag_seconds"] == 7 * 86400
    out = subprocess.run(
        [RECSYS, "features", "status"],
        env={**demo_env, "COLUMNS": "200"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "sqlite" in out.stdout and "lte_ae@v1" in out.stdout


def test_users_own_feast_apply_in_the_repo_dir(demo_env: dict[str, str], tmp_path: Path) -> None:
    """The Feast repo is a real one: `feast apply` there defines one view per catalog version."""
    import shutil

    data_dir = Path(demo_env["RECSYS_DATA_DIR"])
    repo = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "feature_store" / "repo", repo)
    # Point the shipped yaml at this test's data dir (it defaults to <repo>/var) and a fresh registry.
    yaml = (repo / "feature_store.yaml").read_text()
    yaml = yaml.replace("../../var/feast_registry.db", str(tmp_path / "registry.db"))
    yaml = yaml.replace("../../var/online_store.db", str(data_dir / "online_store.db"))
    (repo / "feature_store.yaml").write_text(yaml)
    feast = str(Path(sys.executable).parent / "feast")
    out = subprocess.run([feast, "-c", str(repo), "apply"], env=demo_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        [feast, "-c", str(repo), "feature-views", "list"], env=demo_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for name in ("lte_avg__v1", "lte_ae__v1", "recent_items__v1", "item_features__v1"):
        assert name in out.stdout


def test_cli_builds_a_second_lte_version_in_the_same_basis(demo_env: dict[str, str], service: str) -> None:
    """A new LTE version: same basis fingerprint, both versions online at once, old one unchanged."""
    import json

    import pandas as pd

    frame = pd.read_parquet(Path(demo_env["RECSYS_DATA_DIR"]) / "offline" / "lte_avg" / "v1.parquet")
    user = str(frame[frame.event_timestamp == frame.event_timestamp.max()].sort_values("n_items").iloc[-1].user_id)
    before = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v1", "entity_ids": [user]}).json()
    run = [
        RECSYS,
        "features",
        "build-lte",
        "--dataset",
        "synthetic",
        "--variant",
        "avg",
        "--lag-days",
        "3",
        "--every-days",
        "30",
    ]
    out = subprocess.run(run, env=demo_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lte_avg@v2" in out.stdout
    out = subprocess.run(
        [RECSYS, "features", "materialize", "lte_avg@v2"],
        env=demo_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        [RECSYS, "features", "versions", "--json"], env=demo_env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    versions = {f"{v['view']}@v{v['version']}": v for v in json.loads(out.stdout)}
    assert versions["lte_avg@v2"]["basis_fingerprint"] == versions["lte_avg@v1"]["basis_fingerprint"]
    assert versions["lte_avg@v2"]["window"]["lag_seconds"] == 3 * 86400
    assert versions["lte_avg@v2"]["status"]["state"] == "online"
    after = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v1", "entity_ids": [user]}).json()
    assert after == before
    v2 = httpx.post(f"{service}/v1/features/read", json={"ref": "lte_avg@v2", "entity_ids": [user]}).json()
    assert v2["rows"][0]["present"] and v2["rows"][0]["values"]["lte"] != before["rows"][0]["values"]["lte"]
    # A bad option value is a clean error, not a traceback.
    out = subprocess.run([*run[:5], "--variant", "nope"], env=demo_env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "unknown LTE variant" in out.stdout


def test_prepare_missing_dataset_root_is_a_clear_error(demo_env: dict[str, str], tmp_path: Path) -> None:
    out = subprocess.run(
        [RECSYS, "data", "prepare", "ml-latest-small", "--datasets-root", str(tmp_path / "none")],
        env=demo_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "RECSYS_DATASETS_ROOT" in out.stdout
