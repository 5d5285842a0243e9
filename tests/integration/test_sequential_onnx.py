"""Torch and ONNX Runtime agree on the top-k (scores within 1e-4) for >= 1,000 users, exclude mask applied.

A small model is trained for one epoch on synthetic data, exported with the dynamo exporter, and
both the LTE variant and the no-LTE baseline are checked against the family contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_store.sources.synthetic import SyntheticConfig, generate
from models.contracts import CONTRACTS
from models.eval.split import leave_one_out
from models.sequential.data import LagPolicy, query_inputs, training_chunks
from models.sequential.export import ITEM_INDEX_FILE, PARAMS_FILE, OnnxRecommender, export_model, quantize_int8
from models.sequential.features import exclude_mask
from models.sequential.model import SASRec, SASRecConfig, exportable
from models.sequential.train import TrainConfig, fit

D = 16
USERS = 1000


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    ds = generate(SyntheticConfig(n_users=USERS, seed=5))
    split = leave_one_out(ds.interactions, "synthetic")
    assert len(split) >= 1000
    rows = np.arange(len(split))
    pol = LagPolicy.none()
    train = training_chunks(split.train_sequences(), [t[:-2] for t in split.timestamps], 50, pol, prefix=False)
    test = query_inputs(
        [split.test_input(i) for i in rows],
        [t[:-1] for t in split.timestamps],
        np.array([split.target_time(i, "test") for i in rows]),
        split.targets(rows, "test"),
        50,
        pol,
    )
    # A fixed per-user vector stands in for the LTE: parity does not depend on where it came from.
    user_vec = np.random.default_rng(0).standard_normal((len(split), D)).astype(np.float32)
    train.lte, test.lte = user_vec[train.rows], user_vec
    exclude = exclude_mask([split.test_input(i) for i in rows], split.n_items)
    return split, train, test, exclude


@pytest.mark.parametrize("variant", ["avg", "none"])
def test_onnx_matches_torch_topk(variant: str, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    split, train, test, exclude = data
    torch.manual_seed(0)
    cfg = SASRecConfig(
        n_items=split.n_items,
        max_len=50,
        hidden=32,
        n_blocks=2,
        n_heads=2,
        dropout=0.2,
        lte_dim=D if variant != "none" else None,
        variant=variant,
    )
    model = SASRec(cfg)
    fit(model, train.subset(np.arange(min(len(train), 1500))), TrainConfig(epochs=1, batch_size=128, seed=0))
    out = export_model(model, tmp_path / variant, split.item_ids.tolist(), params={"lag_seconds": 0}, top_k=100)

    # the artifact: contract inputs/outputs, item index, params
    contract = CONTRACTS["sequential"]
    runner = OnnxRecommender(out)
    inputs = {i.name: i for i in runner.session.get_inputs()}
    expected_inputs = [t.name for t in contract.inputs if t.required or variant != "none"]
    assert list(inputs) == expected_inputs
    dtype = {"tensor(int64)": "int64", "tensor(float)": "float32", "tensor(bool)": "bool"}
    for t in contract.inputs:
        if t.name in inputs:
            assert dtype[inputs[t.name].type] == t.dtype and len(inputs[t.name].shape) == t.rank
            assert isinstance(inputs[t.name].shape[0], str), "batch axis must be dynamic"
    assert [o.name for o in runner.session.get_outputs()] == [t.name for t in contract.outputs]
    assert json.loads((out / ITEM_INDEX_FILE).read_text()) == split.item_ids.tolist()
    params = json.loads((out / PARAMS_FILE).read_text())
    assert params["variant"] == variant and params["top_k"] == 100 and params["max_len"] == 50
    assert (out / "model.onnx.data").exists()

    lte = test.lte if variant != "none" else None
    ort_scores, ort_items = runner.recommend(test.item_seq, lte, exclude)
    wrapper = exportable(model, 100)
    with torch.no_grad():
        args = [torch.from_numpy(test.item_seq)]
        if lte is not None:
            args.append(torch.from_numpy(lte))
        args.append(torch.from_numpy(exclude))
        t_scores, t_items = (x.numpy() for x in wrapper(*args))
    assert ort_scores.shape == (len(test), 100)
    np.testing.assert_allclose(ort_scores, t_scores, atol=1e-4, rtol=0)
    differ = ort_items != t_items
    # identical lists, except possibly the order of items whose scores tie within 1e-4
    assert differ.mean() < 1e-3
    for r, c in zip(*np.nonzero(differ), strict=True):
        assert abs(ort_scores[r, c] - t_scores[r, c]) <= 1e-4
    assert not exclude[np.arange(len(test))[:, None], ort_items].any(), "excluded items are never returned"

    one_scores, _ = runner.recommend(test.item_seq[:1], None if lte is None else lte[:1], exclude[:1])
    np.testing.assert_allclose(one_scores, ort_scores[:1], atol=1e-5)

    # INT8 dynamic quantization still loads, keeps the contract and mostly agrees on the top 10
    quantize_int8(out)
    q = OnnxRecommender(out, onnx_file="model.int8.onnx")
    _, q_items = q.recommend(test.item_seq, lte, exclude)
    overlap = np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(q_items, ort_items, strict=True)])
    assert overlap > 0.5
