"""train_and_export on a feature store like the demo's: pinned refs, artifact files, held-out metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feature_store import build as builds
from feature_store import feast_ops
from feature_store.sources.prepared import load_source, prepare
from models.sequential.export import OnnxRecommender
from models.sequential.pipeline import train_and_export
from tests.conftest import make_settings


@pytest.mark.slow
def test_train_and_export_pins_the_versions_it_trained_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "store")
    prepare(settings, load_source("synthetic", settings, users=400, seed=2))
    lte = builds.build_lte(settings, dataset="synthetic", variant="avg", basis_kind="attributes", every_days=14)
    recent = builds.build_recent(settings, dataset="synthetic", every_days=14)
    feast_ops.apply(settings)

    out = tmp_path / "artifact"
    result = train_and_export(
        settings,
        "synthetic",
        "avg",
        4,
        0,
        out,
        lte.ref,
        recent.ref,
        max_chunks_per_user=None,
        batch_size=64,
        hidden=32,
        max_len=20,
    )

    assert result["feature_refs"] == [lte.ref, recent.ref]
    assert result["artifact_dir"] == str(out)
    for name in ("model.onnx", "model.onnx.data", "item_index.json", "params.json"):
        assert (out / name).exists(), name
    params = json.loads((out / "params.json").read_text())
    assert params["lag_seconds"] == lte.window.lag_seconds
    assert params["lte_ref"] == lte.ref and params["recent_ref"] == recent.ref
    assert params["variant"] == "avg" and params["lte_dim"] == 64
    assert result["training"]["dataset"] == "synthetic" and result["training"]["data_id"]
    m = result["metrics"]
    assert m["NDCG@10"] > m["popularity_NDCG@10"]
    runner = OnnxRecommender(out)
    assert runner.has_lte and len(runner.item_ids) == params["n_items"] + 1

    base = train_and_export(settings, "synthetic", "none", 1, 0, tmp_path / "none", None, recent.ref, hidden=16)
    assert base["feature_refs"] == [recent.ref]
    assert not OnnxRecommender(tmp_path / "none").has_lte
