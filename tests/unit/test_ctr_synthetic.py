"""Synthetic impressions: deterministic, and every context field really moves the click probability."""

from __future__ import annotations

import pandas as pd

from feature_store.sources.synthetic_ctr import CTR_CATEGORICAL_FIELDS, SyntheticCTRConfig, generate_ctr
from models.ctr.metrics import roc_auc

CFG = SyntheticCTRConfig(n_impressions=20_000, n_users=500, n_items=200, n_creators=20, seed=3)


def test_same_seed_same_impressions_other_seed_differs() -> None:
    a = generate_ctr(CFG)
    b = generate_ctr(CFG)
    pd.testing.assert_frame_equal(a, b)
    c = generate_ctr(SyntheticCTRConfig(**{**CFG.to_dict(), "seed": 4}))
    assert not a["p_click"].equals(c["p_click"])
    assert list(a.columns) == [*CTR_CATEGORICAL_FIELDS, "click", "p_click"]
    assert len(a) == CFG.n_impressions


def test_clicks_follow_p_click_and_are_learnable() -> None:
    d = generate_ctr(CFG)
    assert 0.15 < d["click"].mean() < 0.5
    assert abs(d["click"].mean() - d["p_click"].mean()) < 0.02
    # The oracle ranks well above chance: there is signal for a model to find.
    assert roc_auc(d["click"].to_numpy(), d["p_click"].to_numpy()) > 0.8


def test_context_fields_change_click_probability() -> None:
    d = generate_ctr(CFG)
    by_surface = d.groupby("surface")["p_click"].mean()
    assert by_surface["search"] > by_surface["home"] > by_surface["related"]
    # Hour and device act through the item's topic: within one topic the hour buckets differ clearly.
    topic = d["topic"].value_counts().index[0]
    per_hour = d[d["topic"] == topic].groupby("hour_bucket")["p_click"].mean()
    assert per_hour.max() - per_hour.min() > 0.05
    per_device = d[d["topic"] == topic].groupby("device")["p_click"].mean()
    assert per_device.max() - per_device.min() > 0.02
    # Weekend shifts some topics up and others down.
    weekend = d["weekday"].isin(["sat", "sun"])
    shift = d[weekend].groupby("topic")["p_click"].mean() - d[~weekend].groupby("topic")["p_click"].mean()
    assert shift.abs().max() > 0.02


def test_user_taste_drives_clicks() -> None:
    d = generate_ctr(CFG)
    # Users click their own items' topics more: user x topic click rates spread far beyond the global mean.
    rates = d.groupby(["user_id", "topic"])["p_click"].mean()
    assert rates.quantile(0.9) - rates.quantile(0.1) > 0.2
