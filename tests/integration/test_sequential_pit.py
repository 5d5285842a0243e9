"""The sequential family's training data is point in time, through the real feature store.

Builds the experiment's LTE versions (training-only and train+valid interactions) for a small
synthetic dataset, runs the Feast historical joins, and checks every example and query against
the definition: its LTE is the average over the user's events in [S - lag - window, S - lag) of
the snapshot S at or before the example's time (or the newest older snapshot that has a row), using
only the interactions that version may contain, and its sequence starts at S - lag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.sequential.data import US, Examples
from models.sequential.experiment import DatasetPlan, prepare_data, settings_for

PLAN = DatasetPlan(lag_days=7, window_days=60, every_days=7, basis_kind="attributes", synthetic_users=150)


def _expected_lte(
    events: dict[str, tuple[np.ndarray, np.ndarray]], vectors: dict[str, np.ndarray], user: str, snap_us: int
) -> np.ndarray:
    lag, window, every = (int(d * 86400 * US) for d in (PLAN.lag_days, PLAN.window_days, PLAN.every_days))
    items, ts = events.get(user, (np.array([]), np.array([], dtype=np.int64)))
    s = snap_us
    for _ in range(200):  # Feast returns the newest row at or before S: walk back to a non-empty window
        sel = (ts >= s - lag - window) & (ts < s - lag)
        if sel.any():
            return np.mean([vectors[i] for i in items[sel]], axis=0)
        s -= every
    return np.zeros(next(iter(vectors.values())).shape, dtype=np.float32)


def _check(ex: Examples, users: np.ndarray, interactions: pd.DataFrame, vectors: dict[str, np.ndarray]) -> int:
    ts_us = interactions["timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    events = {
        u: (g["item_id"].to_numpy(), ts_us[g.index.to_numpy()])
        for u, g in interactions.reset_index(drop=True).groupby("user_id")
    }
    assert ex.lte is not None and ex.snapshot_us is not None
    checked = 0
    for e in range(0, len(ex), max(1, len(ex) // 300)):
        snap = int(ex.snapshot_us[e])
        assert snap <= int(ex.times[e]) * US
        expected = _expected_lte(events, vectors, str(users[ex.rows[e]]), snap)
        np.testing.assert_allclose(ex.lte[e], expected, atol=1e-5)
        checked += 1
    return checked


def test_examples_get_point_in_time_lte_from_training_only_versions(tmp_path: Path) -> None:
    from feature_store.build import dataset_basis
    from feature_store.sources.prepared import load_prepared

    data = prepare_data("synthetic", "avg", tmp_path, PLAN)
    settings = settings_for("synthetic", tmp_path)
    basis = dataset_basis(settings, "synthetic-train", "attributes")
    vectors = dict(zip(basis.item_ids.tolist(), basis.vectors, strict=True))
    train_inter = load_prepared(settings, "synthetic-train").interactions
    trainval_inter = load_prepared(settings, "synthetic-trainval").interactions
    split = data.split

    # the training version holds no validation/test target: -train has exactly the training parts
    assert len(train_inter) == sum(len(s) for s in split.train_sequences())
    assert len(trainval_inter) == len(train_inter) + len(split)

    users = split.users
    assert _check(data.train, users, train_inter, vectors) > 100
    assert _check(data.valid, users, train_inter, vectors) > 100
    assert _check(data.test, users, trainval_inter, vectors) > 100
    assert data.stats["train"]["lte_present"] > 0.5

    # queries: the sequence is the input history from S - lag on (the LTE horizon), most recent last
    lag_us = int(PLAN.lag_days * 86400 * US)
    for i in range(0, len(split), 7):
        hist, hist_ts = split.test_input(i), split.timestamps[i][:-1]
        keep = hist[hist_ts * US >= data.test.snapshot_us[i] - lag_us][-PLAN.max_len :]  # type: ignore[index]
        seq = data.test.item_seq[i]
        assert seq[seq != 0].tolist() == keep.tolist()

    # the cache gives the same arrays back (seeds reuse one join)
    again = prepare_data("synthetic", "avg", tmp_path, PLAN)
    np.testing.assert_array_equal(again.train.lte, data.train.lte)  # type: ignore[arg-type]
