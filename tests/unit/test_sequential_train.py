"""A few epochs on synthetic data beat popularity on held-out users (quick, no Feast)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from feature_store.pipelines.basis import build_attribute_basis
from feature_store.pipelines.lte import LTEWindow, compute_lte_average
from feature_store.sources.synthetic import SyntheticConfig, generate
from models.eval.baselines import Popularity
from models.eval.harness import evaluate
from models.eval.split import leave_one_out
from models.sequential.data import US, LagPolicy, query_inputs, training_chunks
from models.sequential.model import SASRec, SASRecConfig
from models.sequential.train import TrainConfig, fit, score_examples

LAG = timedelta(days=7)
EVERY = timedelta(days=7)


def _lte_lookup(frame: pd.DataFrame, users: np.ndarray, snaps: np.ndarray, dim: int) -> np.ndarray:
    """Exact-snapshot lookup standing in for the Feast join (the integration tests use the real one)."""
    key = {
        (u, int(t)): v
        for u, t, v in zip(
            frame["user_id"],
            frame["event_timestamp"].astype("datetime64[us, UTC]").astype("int64"),
            frame["lte"],
            strict=True,
        )
    }
    zero = np.zeros(dim, dtype=np.float32)
    return np.stack([key.get((str(u), int(s)), zero) for u, s in zip(users, snaps, strict=True)]).astype(np.float32)


@pytest.mark.parametrize("variant", ["none", "avg"])
def test_training_beats_popularity_on_synthetic(variant: str) -> None:
    torch.manual_seed(0)
    ds = generate(SyntheticConfig(n_users=400, seed=3))
    split = leave_one_out(ds.interactions, "synthetic")
    n = len(split)
    train_ts = [t[:-2] for t in split.timestamps]
    if variant == "none":
        pol, lte_dim = LagPolicy.none(), None
    else:
        basis = build_attribute_basis(ds.items, dim=16)
        lte_dim = basis.dim
        as_of = pd.Timestamp(int(max(t.max() for t in split.timestamps)) + 1, unit="s", tz="UTC")
        grid = [as_of - k * EVERY for k in range(60)][::-1]
        pol = LagPolicy(lag_us=int(LAG.total_seconds()) * US, as_of_us=as_of.value // 1000, every_us=7 * 86400 * US)
        # LTE from the training part only (no valid/test target inside), like the experiment's train version
        train_rows = [
            (u, split.item_ids[i], pd.Timestamp(int(t), unit="s", tz="UTC"))
            for u, s, ts in zip(split.users, split.train_sequences(), train_ts, strict=True)
            for i, t in zip(s, ts, strict=True)
        ]
        inter = pd.DataFrame(train_rows, columns=["user_id", "item_id", "timestamp"])
        frame = compute_lte_average(inter, basis, LTEWindow(lag=LAG, window=timedelta(days=365)), grid, False)
    train = training_chunks(split.train_sequences(), train_ts, 30, pol, prefix=variant != "none")
    rows = np.arange(n)
    valid = query_inputs(
        [split.valid_input(i) for i in rows],
        train_ts,
        np.array([split.target_time(i, "valid") for i in rows]),
        split.targets(rows, "valid"),
        30,
        pol,
    )
    if variant != "none":
        train.lte = _lte_lookup(frame, split.users[train.rows], train.snapshot_us, lte_dim)
        valid.lte = _lte_lookup(frame, split.users, valid.snapshot_us, lte_dim)
    cfg = SASRecConfig(
        n_items=split.n_items,
        max_len=30,
        hidden=32,
        n_blocks=1,
        n_heads=2,
        dropout=0.1,
        lte_dim=lte_dim,
        variant=variant,
    )
    model = SASRec(cfg)
    result = fit(model, train, TrainConfig(epochs=4, batch_size=64, lr=3e-3, seed=0))
    assert result.losses[-1] < result.losses[0]
    ours = evaluate(lambda s, r, w: score_examples(model, valid, r), split, "valid", ks=(10,), progress=False)
    pop = evaluate(Popularity().fit(split), split, "valid", ks=(10,), progress=False)
    assert ours["NDCG@10"] > pop["NDCG@10"] + 0.01, (ours, pop)
