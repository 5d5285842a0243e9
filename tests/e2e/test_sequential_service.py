"""The sequential service as a real process over the demo's registered model and feature store."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from feature_store.config import REPO_ROOT
from services.sequential.app import RecommendResponse
from tests.conftest import free_port
from tests.e2e.conftest import RECSYS
from tests.e2e.helpers import start_service, stop_service


@pytest.fixture(scope="module")
def seq_service(demo_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = start_service("sequential", port, demo_env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(proc)


def _active_user(demo_env: dict[str, str]) -> tuple[str, set[str]]:
    frame = pd.read_parquet(Path(demo_env["RECSYS_DATA_DIR"]) / "offline" / "recent_items" / "v1.parquet")
    last = frame[frame.event_timestamp == frame.event_timestamp.max()]
    row = last.iloc[int(last["item_ids"].map(len).argmax())]
    return str(row.user_id), set(row.item_ids)


def _exactly_the_documented_schema(body: dict) -> None:
    """The hot path builds answers as plain dicts (no per-answer validation): they must be exactly
    the documented RecommendResponse, every field present, nothing else."""
    assert set(body) == set(RecommendResponse.model_fields)
    assert RecommendResponse.model_validate(body).model_dump(mode="json") == body


def test_recommends_for_a_known_user_with_pinned_versions(seq_service: str, demo_env: dict[str, str]) -> None:
    user, seen = _active_user(demo_env)
    r = httpx.post(f"{seq_service}/v1/recommend", json={"user_id": user, "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    _exactly_the_documented_schema(body)
    assert body["fallback"] is False and body["model"] == "seq-lte" and body["model_version"] == 1
    assert set(body["feature_versions"]) == {"lte_avg@v1", "recent_items@v1"}
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not seen & set(ids), "exclude_seen must drop the user's recent items"
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # Same request pinned to the version number answers the same; without exclusion, seen items may come back.
    same = httpx.post(f"{seq_service}/v1/recommend", json={"user_id": user, "k": 10, "model_version": "1"}).json()
    assert [i["item_id"] for i in same["items"]] == ids
    r = httpx.post(f"{seq_service}/v1/recommend", json={"user_id": user, "k": 10, "exclude_seen": False})
    assert r.status_code == 200


def test_recent_items_in_the_request_change_the_answer(seq_service: str, demo_env: dict[str, str]) -> None:
    user, _ = _active_user(demo_env)
    base = httpx.post(f"{seq_service}/v1/recommend", json={"user_id": user, "k": 20}).json()
    extra = [base["items"][0]["item_id"]]
    r = httpx.post(f"{seq_service}/v1/recommend", json={"user_id": user, "k": 20, "recent_items": extra}).json()
    assert extra[0] not in [i["item_id"] for i in r["items"]]


def test_unknown_user_gets_flagged_popularity_fallback(seq_service: str) -> None:
    r = httpx.post(f"{seq_service}/v1/recommend", json={"user_id": "never-seen-user", "k": 5})
    assert r.status_code == 200
    body = r.json()
    _exactly_the_documented_schema(body)
    assert body["fallback"] is True and "unknown user" in body["fallback_reason"]
    assert len(body["items"]) == 5


def test_bad_input_is_4xx_with_a_message(seq_service: str) -> None:
    cases = [
        ({"user_id": "", "k": 5}, 422, "user_id"),
        ({"user_id": "u1", "k": 0}, 422, "k"),
        ({"user_id": "u1", "k": 500}, 422, "top_k"),
        ({"user_id": "u1", "k": 5, "bogus": 1}, 422, "bogus"),
        ({"user_id": "u1", "k": 5, "model_version": "v99"}, 404, "seq-lte"),
        ({"user_id": "u1", "k": 5, "model_version": "Bad Alias!"}, 422, "model_version"),
        ({"user_id": "u1", "k": 5, "recent_items": ["x"] * 201}, 422, "at most 200"),
        ({"k": 5}, 422, "user_id"),
    ]
    for body, status, needle in cases:
        r = httpx.post(f"{seq_service}/v1/recommend", json=body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["error"]["message"], (body, r.text)
    r = httpx.post(f"{seq_service}/v1/recommend", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_metrics_carry_model_and_version(seq_service: str) -> None:
    text = httpx.get(f"{seq_service}/metrics").text
    assert 'model="seq-lte"' in text and 'version="1"' in text
    assert "recsys_inference_seconds_count" in text and "recsys_feature_read_seconds_count" in text


def test_retention_guard_refuses_to_retire_pinned_features(demo_env: dict[str, str]) -> None:
    out = subprocess.run(
        [RECSYS, "features", "retire", "lte_avg@v1"], env=demo_env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "seq-lte@v1" in out.stdout
    out = subprocess.run(
        [RECSYS, "models", "show", "seq-lte", "champion", "--json"],
        env=demo_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    manifest = json.loads(out.stdout)
    assert [p["ref"] for p in manifest["feature_refs"]] == ["lte_avg@v1", "recent_items@v1"]
    assert manifest["onnx_sha256"] and manifest["files"]


def test_service_builds_the_inputs_training_builds(seq_service: str, demo_env: dict[str, str]) -> None:
    """Train/serve agreement: the answer equals the offline pipeline's (features.build_inputs on the
    user's stored features, the lag boundary at the LTE value's own as-of, then the same ONNX graph).
    Cutting the sequence at the request time instead empties it for the demo's 2024 data."""
    from feature_store.config import FeatureStoreSettings
    from models.registry import ModelRegistry
    from models.sequential.export import OnnxRecommender
    from models.sequential.features import build_inputs

    data_dir = Path(demo_env["RECSYS_DATA_DIR"])
    version = ModelRegistry.from_settings(FeatureStoreSettings(data_dir=data_dir)).resolve("seq-lte", "champion")
    rec = OnnxRecommender(version.path)
    user, _ = _active_user(demo_env)

    def newest(view: str) -> pd.Series:
        frame = pd.read_parquet(data_dir / "offline" / view / "v1.parquet")
        rows = frame[frame.user_id == user]
        return rows.loc[rows.event_timestamp.idxmax()]

    recent, lte = newest("recent_items"), newest("lte_avg")
    index = {item: i for i, item in enumerate(rec.item_ids)}
    p = rec.params
    seq, vec = build_inputs(
        list(recent.item_ids),
        list(recent.timestamps),
        lte.lte.astype("float32"),
        index,
        int(p["max_len"]),
        lte.event_timestamp.timestamp(),
        float(p["lag_seconds"]),
        int(p["lte_dim"]),
    )
    assert (seq != 0).sum() > 0, "the demo user should have a short-term sequence after the LTE horizon"
    exclude = np.zeros((1, len(rec.item_ids)), dtype=bool)
    exclude[0, 0] = True
    exclude[0, [index[i] for i in recent.item_ids if i in index]] = True
    _, items = rec.recommend(seq[None, :], vec[None, :], exclude)
    expected = [rec.item_ids[i] for i in items[0][:10]]

    body = httpx.post(f"{seq_service}/v1/recommend", json={"user_id": user, "k": 10}).json()
    assert [i["item_id"] for i in body["items"]] == expected
