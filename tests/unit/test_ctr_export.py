"""The ONNX contract the CTR service is built on: names, dtypes, dynamic batch, sidecars, torch parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.ctr.calibrate import Calibration, fit_platt
from models.ctr.data import build_spec, encode_frame, encode_rows, rows_from_frame
from models.ctr.export import FIELDS_FILE, ONNX_FILE, PARAMS_FILE, OnnxCTRScorer, export_ctr
from models.ctr.metrics import expected_calibration_error, log_loss, roc_auc
from models.ctr.model import CalibratedCTR, CTRConfig, CTRModel

CAT = ["site", "ad", "hour"]
NUM = ["count", "price"]


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    count = rng.integers(-2, 500, n).astype(float)
    count[rng.random(n) < 0.2] = np.nan  # Criteo-style missing numerics
    return pd.DataFrame(
        {
            "site": rng.choice(["a", "b", "c", "d"], n),
            "ad": rng.integers(0, 40, n),
            "hour": rng.choice(["", "morning", "evening"], n),
            "count": count,
            "price": rng.normal(10, 5, n),
            "label": rng.integers(0, 2, n),
        }
    )


def _trained_like(cfg: CTRConfig) -> CTRModel:
    torch.manual_seed(0)
    model = CTRModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # away from the near-zero init, so every path matters
    return model


@pytest.mark.parametrize(
    "model_kind,flt,numeric",
    [("ssr", "static", True), ("ssr", "ics", False), ("dcnv2", "static", True), ("fm", "static", False)],
)
def test_encode_rows_plus_onnx_runtime_equals_torch(tmp_path: Path, model_kind: str, flt: str, numeric: bool) -> None:
    fit = _frame(400, 0)
    spec = build_spec(fit, CAT, NUM if numeric else [])
    cfg = CTRConfig(
        model=model_kind,
        n_features=spec.n_features,
        n_categorical=len(CAT),
        n_numeric=len(spec.numeric),
        embed_dim=6,
        hidden=(16, 16),
        ssr_hidden=16,
        ssr_view_dim=4,
        ssr_filter=flt,
    )
    model = _trained_like(cfg)
    cal = Calibration(scale=0.7, bias=-0.2, method="platt")
    export_ctr(model, spec, tmp_path, cal, valid_auc=0.61)

    # Raw request rows, with unseen values, an absent field and a missing number mixed in.
    req = _frame(37, 1)
    rows = rows_from_frame(req, CAT + (NUM if numeric else []))
    rows[0]["site"] = "never-seen"
    rows[1].pop("hour")
    rows[2]["ad"] = 10_000
    scorer = OnnxCTRScorer(tmp_path)
    p_onnx, unknown = scorer.predict_rows(rows)

    ids, num, unknown_direct = encode_rows(spec, rows)
    with torch.no_grad():
        p_torch = CalibratedCTR(model, 0.7, -0.2)(
            torch.from_numpy(ids), None if num is None else torch.from_numpy(num)
        ).numpy()
    assert p_onnx.dtype == np.float32 and p_onnx.shape == (37,)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    assert unknown == unknown_direct
    assert unknown["site"] >= 1 and unknown["ad"] >= 1
    # Calibration is inside the graph: undoing it recovers the raw logit.
    with torch.no_grad():
        logits = model(torch.from_numpy(ids), None if num is None else torch.from_numpy(num)).numpy()
    np.testing.assert_allclose(p_onnx, 1 / (1 + np.exp(-(0.7 * logits - 0.2))), atol=1e-5)


def test_graph_signature_dynamic_batch_and_sidecars(tmp_path: Path) -> None:
    fit = _frame(300, 2)
    spec = build_spec(fit, CAT, NUM)
    cfg = CTRConfig(
        model="ssr", n_features=spec.n_features, n_categorical=3, n_numeric=2, embed_dim=4, ssr_hidden=8, ssr_view_dim=2
    )
    export_ctr(_trained_like(cfg), spec, tmp_path, valid_auc=0.5, extra_params={"dataset": "toy"})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ONNX_FILE, FIELDS_FILE, PARAMS_FILE])
    scorer = OnnxCTRScorer(tmp_path)
    inputs = {i.name: i for i in scorer.session.get_inputs()}
    assert list(inputs) == ["feature_ids", "numeric"]
    assert inputs["feature_ids"].type == "tensor(int64)" and inputs["feature_ids"].shape[1] == 3
    assert inputs["numeric"].type == "tensor(float)" and inputs["numeric"].shape[1] == 2
    (out,) = scorer.session.get_outputs()
    assert out.name == "probability" and out.type == "tensor(float)" and len(out.shape) == 1
    for b in (1, 5, 64):
        ids, num, _ = encode_frame(spec, _frame(b, 3))
        p = scorer.predict_encoded(ids, num)
        assert p.shape == (b,) and ((p > 0) & (p < 1)).all()

    fields = json.loads((tmp_path / FIELDS_FILE).read_text())
    first = fields["categorical"][0]
    assert set(first) >= {"name", "offset", "size", "default_id", "values"}
    assert first["default_id"] == first["offset"] and first["default_id"] not in first["values"].values()
    assert [f["name"] for f in fields["numeric"]] == NUM and fields["numeric"][0]["default"] == 0.0
    params = json.loads((tmp_path / PARAMS_FILE).read_text())
    assert params["family"] == "ctr" and params["variant"] == "SSR-S" and params["embed_dim"] == 4
    assert params["parameters"]["total"] > 0 and params["valid_auc"] == 0.5 and params["dataset"] == "toy"
    assert params["calibration"]["scale"] == 1.0


def test_spec_without_numeric_fields_exports_one_input(tmp_path: Path) -> None:
    spec = build_spec(_frame(100, 4), CAT)
    cfg = CTRConfig(model="lr", n_features=spec.n_features, n_categorical=3)
    export_ctr(_trained_like(cfg), spec, tmp_path)
    scorer = OnnxCTRScorer(tmp_path)
    assert [i.name for i in scorer.session.get_inputs()] == ["feature_ids"]
    other = build_spec(_frame(100, 5).assign(site="z"), CAT)
    with pytest.raises(ValueError):
        export_ctr(_trained_like(cfg), other, tmp_path)  # a different vocabulary size is refused


def test_platt_scaling_repairs_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 20_000)
    y = (rng.random(20_000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    overconfident = 3.0 * true_logit + 0.5
    cal = fit_platt(overconfident, y)
    assert cal.method == "platt"
    assert cal.scale == pytest.approx(1 / 3, rel=0.1) and cal.bias == pytest.approx(-0.5 / 3, abs=0.1)
    assert cal.after is not None and cal.before is not None
    assert cal.after["LogLoss"] < cal.before["LogLoss"] and cal.after["ECE"] < cal.before["ECE"]
    p = cal.apply(overconfident)
    assert roc_auc(y, p) == pytest.approx(roc_auc(y, overconfident))  # monotone: AUC unchanged
    assert expected_calibration_error(y, p) < 0.02
    assert log_loss(y, p) < log_loss(y, 1 / (1 + np.exp(-overconfident)))


def test_auc_matches_the_pairwise_definition_with_ties() -> None:
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.9, 0.5, 0.1, 0.2, 0.3])
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    expected = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert roc_auc(y, s) == pytest.approx(expected)
    assert np.isnan(roc_auc(np.ones(3), np.arange(3)))
