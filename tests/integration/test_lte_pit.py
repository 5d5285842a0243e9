"""No leakage through the point-in-time join: the LTE attached to a training example at time t
uses no interaction at or after t - lag.

A "poison" item owns basis dimension 0 (every other item is zero there), so any LTE with a
non-zero component 0 provably averaged a poison interaction. Poison events are placed at, just
before and after each example's t - lag; examples are joined through Feast's historical
retrieval (DuckDB offline store) from a real LTE version built by the real pipeline.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store import feast_ops
from feature_store.build import lte_fields, snapshot_grid, window_of, write_version
from feature_store.pipelines.basis import SemanticBasis
from feature_store.pipelines.lte import LTEWindow, compute_lte_average
from tests.conftest import make_settings

DIM = 8
LAG = timedelta(days=3)
WINDOW = timedelta(days=30)
START = pd.Timestamp("2024-01-01", tz="UTC")


def _basis(n_items: int) -> SemanticBasis:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n_items + 1, DIM)).astype(np.float32)
    vecs[:, 0] = 0.0
    vecs[-1] = 0.0
    vecs[-1, 0] = 1.0  # the poison item: the only one with a component on dimension 0
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return SemanticBasis(
        encoder="test-poison", item_ids=np.array([f"i{i}" for i in range(n_items)] + ["poison"]), vectors=vecs
    )


def test_pit_join_never_sees_interactions_at_or_after_t_minus_lag(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 60, 40
    basis = _basis(n_items)
    rows = []
    examples = []
    for u in range(n_users):
        user = f"u{u}"
        for _ in range(40):  # background history over ~120 days
            rows.append(
                (user, f"i{rng.integers(n_items)}", START + pd.Timedelta(seconds=int(rng.integers(0, 120 * 86400))))
            )
        # Each example time t gets one poison event placed relative to t - lag.
        for offset in (pd.Timedelta(0), pd.Timedelta(microseconds=1), pd.Timedelta(hours=5), -pd.Timedelta(days=2)):
            t = START + pd.Timedelta(days=int(rng.integers(40, 120)), seconds=int(rng.integers(0, 86400)))
            rows.append((user, "poison", t - LAG + offset))
            examples.append((user, t, offset))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    inter["timestamp"] = inter["timestamp"].astype("datetime64[us, UTC]")

    settings = make_settings(tmp_path)
    as_of = inter["timestamp"].max() + pd.Timedelta(seconds=1)
    grid = snapshot_grid(inter["timestamp"].min(), as_of, timedelta(days=1), None)
    frame = compute_lte_average(inter, basis, LTEWindow(lag=LAG, window=WINDOW), grid, show_progress=False)
    spec = write_version(
        settings,
        view="lte_avg",
        entity="user",
        frame=frame,
        fields=lte_fields(DIM),
        window=window_of(as_of.to_pydatetime(), LAG, WINDOW, timedelta(days=1), grid[0].to_pydatetime()),
        dataset="poison",
        basis_fingerprint=basis.fingerprint,
    )
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    entity_df = pd.DataFrame([(u, t) for u, t, _ in examples], columns=["user_id", "event_timestamp"])
    out = feast_ops.historical_features(settings, entity_df, [spec.ref], store)
    assert len(out) == len(examples)

    grid_arr = np.array([g.value for g in grid])
    poison_times = inter[inter.item_id == "poison"].groupby("user_id")["timestamp"].apply(list).to_dict()
    leaked_if_wrong = 0
    for i, (user, t, offset) in enumerate(examples):
        lte = np.asarray(out.at[i, f"{spec.ref}:lte"], dtype=np.float32)
        # The newest snapshot at or before t; its window ends at snap - lag <= t - lag.
        snap = pd.Timestamp(grid_arr[np.searchsorted(grid_arr, pd.Timestamp(t).value, side="right") - 1], tz="UTC")
        lo, hi = snap - LAG - WINDOW, snap - LAG
        assert hi <= t - LAG
        visible = [p for p in poison_times[user] if lo <= p < hi]
        assert all(p < t - LAG for p in visible)  # what the LTE may contain is strictly older than t - lag
        if offset >= pd.Timedelta(0):
            leaked_if_wrong += 1  # this example's own poison sits at or after t - lag
        if visible:
            assert lte[0] > 0
        else:
            assert lte[0] == 0.0, (user, t, offset)
        # And the joined vector is exactly the definition's average at that snapshot.
        window_items = inter[(inter.user_id == user) & (inter.timestamp >= lo) & (inter.timestamp < hi)].item_id
        if len(window_items):
            expected = basis.lookup(window_items.tolist()).mean(axis=0)
            np.testing.assert_allclose(lte, expected, rtol=1e-5, atol=1e-6)
            assert out.at[i, f"{spec.ref}:n_items"] == len(window_items)
        else:
            assert not out.at[i, f"{spec.ref}:present"] or out.at[i, f"{spec.ref}:n_items"] == 0
    assert leaked_if_wrong >= 3 * n_users  # the test really placed poison at/after t - lag
