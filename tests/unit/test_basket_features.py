"""models.basket.features: the day/column convention, the candidate rule, batching, and the staple signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.sources.synthetic import SyntheticConfig, generate
from models.basket.features import (
    HORIZON_DAYS,
    build_batch_inputs,
    build_from_indices,
    build_user_inputs,
    day_number,
    pad_batch,
    purchase_day_matrix,
    repeat_candidates,
)

ITEMS = ["", "milk", "bread", "eggs", "tea", "rice"]


def test_last_column_is_the_day_before_as_of_and_as_of_itself_is_ignored() -> None:
    as_of = 1000
    history = [("milk", as_of - 1), ("bread", as_of - HORIZON_DAYS), ("eggs", as_of), ("tea", as_of + 5)]
    days, ids, mask, cands = build_user_inputs(history, as_of, ITEMS)
    assert days.shape == (2, HORIZON_DAYS) and days.dtype == np.float32
    assert cands == ["milk", "bread"]  # eggs/tea were bought on/after the as-of day: not history
    assert ids.tolist() == [1, 2] and ids.dtype == np.int64
    assert mask.tolist() == [1.0, 1.0] and mask.dtype == np.float32
    assert days[0, -1] == 1.0 and days[0].sum() == 1.0  # as_of - 1 -> last column
    assert days[1, 0] == 1.0 and days[1].sum() == 1.0  # as_of - horizon -> first column


def test_purchase_older_than_the_horizon_keeps_the_candidate_with_an_empty_row() -> None:
    days, _, _, cands = build_user_inputs([("rice", 10), ("milk", 900)], 1000, ITEMS)
    assert cands == ["milk", "rice"]
    assert days[1].sum() == 0.0 and days[0].sum() == 1.0


def test_waiting_n_days_shifts_the_history_n_columns_left() -> None:
    history = [("milk", 950), ("milk", 957), ("bread", 990)]
    base, *_ = build_user_inputs(history, 1000, ITEMS)
    later, *_ = build_user_inputs(history, 1010, ITEMS)
    np.testing.assert_array_equal(later[:, :-10], base[:, 10:])
    assert later[:, -10:].sum() == 0.0


def test_candidates_are_the_most_recent_items_capped_at_max_items() -> None:
    n = 1500
    item_idx = np.arange(1, n + 1)
    days = np.arange(n)  # item i last bought on day i - 1: higher index = more recent
    cands = repeat_candidates(item_idx, days, as_of_day=n + 1, max_items=1024)
    assert len(cands) == 1024
    assert cands[0] == n and cands[-1] == n - 1023  # newest first, the 476 oldest dropped
    # Ties in recency: more purchase days first, then the lower index.
    tie = repeat_candidates(np.array([3, 2, 2, 5]), np.array([9, 4, 9, 9]), as_of_day=10)
    assert tie.tolist() == [2, 3, 5]


def test_explore_candidates_follow_the_popularity_list_and_skip_bought_items() -> None:
    history = [("milk", 990), ("unknown-item", 991)]
    days, _, _, cands = build_user_inputs(
        history, 1000, ITEMS, explore_items=["milk", "tea", "rice", "bread"], n_explore=2
    )
    assert cands == ["milk", "tea", "rice"]  # unknown item dropped; milk is a repeat, not explore
    assert days[1:].sum() == 0.0
    inputs = build_from_indices(np.array([1]), np.array([990]), 1000, explore_items=np.array([1, 4, 5]), n_explore=5)
    assert inputs.n_repeat == 1 and inputs.item_ids.tolist() == [1, 4, 5]


def test_a_frame_history_with_timestamps_equals_day_number_pairs() -> None:
    ts = pd.to_datetime(["2024-03-01 18:30", "2024-03-09 08:00"], utc=True)
    frame = pd.DataFrame({"item_id": ["milk", "bread"], "timestamp": ts})
    as_of = day_number("2024-03-10")
    pairs = [("milk", day_number(ts[0])), ("bread", day_number(ts[1]))]
    a = build_user_inputs(frame, as_of, ITEMS)
    b = build_user_inputs(pairs, as_of, ITEMS)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[3] == b[3] == ["bread", "milk"]
    assert b[0][0, -1] == 1.0  # bread on 03-09, the day before the as-of day


def test_batches_pad_with_id_zero_mask_zero_and_empty_rows() -> None:
    days, ids, mask, cands = build_batch_inputs(
        [[("milk", 990)], [("milk", 980), ("bread", 985), ("tea", 999)]], [1000, 1000], ITEMS
    )
    assert days.shape == (2, 3, HORIZON_DAYS)
    assert ids[0].tolist() == [1, 0, 0] and mask[0].tolist() == [1.0, 0.0, 0.0]
    assert days[0, 1:].sum() == 0.0
    assert cands[1] == ["tea", "bread", "milk"]
    with pytest.raises(ValueError):
        pad_batch([])


def test_matrix_helper_ignores_non_candidates() -> None:
    m = purchase_day_matrix(np.array([2]), np.array([1, 2]), np.array([99, 98]), as_of_day=100, horizon=5)
    assert m.tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]


def test_a_synthetic_staple_moves_toward_the_early_bins_as_days_pass() -> None:
    """The features carry the serving behaviour: days since the last purchase grow with the as-of day."""
    ds = generate(SyntheticConfig(n_users=40, n_items=120, n_creators=12, days=120, grocery_user_fraction=1.0, seed=1))
    staples = ds.meta["truth"].staples
    inter = ds.interactions
    row = staples[staples["cadence_days"] == 14].iloc[0]
    bought = inter[(inter["user_id"] == row.user_id)]
    history = list(zip(bought["item_id"], np.asarray(day_number(bought["timestamp"])), strict=True))
    last = max(d for i, d in history if i == row.item_id)
    index = ["", *sorted(inter["item_id"].unique())]
    gaps = []
    for wait in (1, 7, 14):
        days, _, _, cands = build_user_inputs(history, last + wait, index)
        r = cands.index(row.item_id)
        gaps.append(HORIZON_DAYS - int(np.flatnonzero(days[r])[-1]))  # days since the last purchase
    assert gaps == [1, 7, 14]
