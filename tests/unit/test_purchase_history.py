"""The purchase_history view: what a snapshot keeps, merges of new purchases, event validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.pipelines.purchases import (
    HORIZON_DAYS,
    compute_purchase_history,
    day_start,
    events_frame,
    latest_rows,
    merge_history,
    purchases,
    snapshot_day,
)
from feature_store.versions import FeatureStoreError

DAY0 = 19_800  # 2024-03-18


def _lines(rows: list[tuple[str, str, int, int]]) -> pd.DataFrame:
    """(user, item, day, hour) -> canonical purchase lines."""
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "timestamp": [day_start(r[2]) + pd.Timedelta(hours=r[3]) for r in rows],
        }
    )


def _row(frame: pd.DataFrame, user: str, t: pd.Timestamp) -> list[tuple[int, str]]:
    r = frame[(frame.user_id == user) & (frame.event_timestamp == t)]
    assert len(r) == 1, r
    return list(zip(r.iloc[0]["days"], r.iloc[0]["item_ids"], strict=True))


def test_snapshot_day_is_the_day_after_the_last_day_with_data() -> None:
    assert snapshot_day(day_start(DAY0)) == DAY0  # midnight: knows DAY0 - 1 fully
    assert snapshot_day(day_start(DAY0) + pd.Timedelta(hours=23)) == DAY0 + 1
    assert snapshot_day(day_start(DAY0) + pd.Timedelta(microseconds=1)) == DAY0 + 1


def test_snapshot_keeps_distinct_pairs_strictly_before_t_oldest_first() -> None:
    lines = _lines(
        [
            ("u1", "milk", DAY0, 9),
            ("u1", "milk", DAY0, 18),  # same item, same day: one purchase day
            ("u1", "bread", DAY0, 9),
            ("u1", "milk", DAY0 + 7, 10),
            ("u1", "eggs", DAY0 + 7, 11),  # at T exactly: not yet known
            ("u2", "tea", DAY0 + 3, 8),
        ]
    )
    t = day_start(DAY0 + 7) + pd.Timedelta(hours=11)
    frame = compute_purchase_history(lines, [t], show_progress=False)
    assert set(frame.user_id) == {"u1", "u2"}
    assert (frame.event_timestamp == t).all() and (frame.created_timestamp == t).all()
    assert _row(frame, "u1", t) == [(DAY0, "bread"), (DAY0, "milk"), (DAY0 + 7, "milk")]
    assert _row(frame, "u2", t) == [(DAY0 + 3, "tea")]


def test_old_items_keep_only_their_last_purchase_and_the_window_stays_whole() -> None:
    t = day_start(DAY0 + 1000)
    ref = snapshot_day(t)
    start = ref - HORIZON_DAYS  # history_days = HORIZON_DAYS here: the window starts at ref - 364
    lines = _lines(
        [
            ("u1", "old", start - 50, 9),
            ("u1", "old", start - 20, 9),  # last purchase of an item bought only before the window
            ("u1", "both", start - 10, 9),  # older purchase of an item also bought inside: dropped
            ("u1", "both", start, 9),
            ("u1", "both", ref - 1, 9),
        ]
    )
    frame = compute_purchase_history(lines, [t], history_days=HORIZON_DAYS, show_progress=False)
    assert _row(frame, "u1", t) == [(start - 20, "old"), (start, "both"), (ref - 1, "both")]


def test_max_pairs_keeps_the_most_recent() -> None:
    lines = _lines([("u1", f"i{k:02d}", DAY0 + k, 9) for k in range(10)] + [("u2", "x", DAY0, 9)])
    t = day_start(DAY0 + 20)
    frame = compute_purchase_history(lines, [t], max_pairs=4, show_progress=False)
    assert _row(frame, "u1", t) == [(DAY0 + k, f"i{k:02d}") for k in range(6, 10)]
    assert _row(frame, "u2", t) == [(DAY0, "x")]


def test_several_snapshots_and_latest_rows() -> None:
    lines = _lines([("u1", "a", DAY0, 9), ("u1", "b", DAY0 + 10, 9), ("u2", "c", DAY0 + 10, 9)])
    t1, t2 = day_start(DAY0 + 5), day_start(DAY0 + 15)
    frame = compute_purchase_history(lines, [t2, t1], show_progress=False)
    assert _row(frame, "u1", t1) == [(DAY0, "a")]
    assert _row(frame, "u1", t2) == [(DAY0, "a"), (DAY0 + 10, "b")]
    assert len(frame[frame.event_timestamp == t1]) == 1  # u2 had bought nothing before t1
    latest = latest_rows(frame)
    assert list(latest.user_id) == ["u1", "u2"] and (latest.event_timestamp == t2).all()


def test_purchases_filter_by_basket_pattern() -> None:
    inter = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "basket_id": ["u1:s3", "u1:d12"]})
    assert purchases(inter, r":d\d+$")["item_id"].tolist() == ["b"]
    assert len(purchases(inter, None)) == 2
    with pytest.raises(FeatureStoreError):
        purchases(inter.drop(columns="basket_id"), r":d\d+$")


def test_merge_history_unions_dedupes_and_caps() -> None:
    items, days = merge_history(["a", "b"], [10, 12], ["b", "c", "a"], [12, 15, 9], max_pairs=10)
    assert list(zip(days, items, strict=True)) == [(9, "a"), (10, "a"), (12, "b"), (15, "c")]
    items, days = merge_history(["a", "b"], [10, 12], ["c"], [15], max_pairs=2)
    assert list(zip(days, items, strict=True)) == [(12, "b"), (15, "c")]


def test_events_are_validated() -> None:
    ok = events_frame([{"user_id": "u1", "item_id": 7, "timestamp": "2024-12-30T10:00:00Z"}])
    assert ok["item_id"].tolist() == ["7"] and str(ok["timestamp"].dtype) == "datetime64[us, UTC]"
    naive = events_frame(pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": ["2024-12-30 10:00"]}))
    assert naive["timestamp"].iloc[0] == pd.Timestamp("2024-12-30 10:00", tz="UTC")
    for bad, msg in [
        ([], "no purchase events"),
        ([{"user_id": "u1", "item_id": "a"}], "missing"),
        ([{"user_id": "", "item_id": "a", "timestamp": "2024-01-01"}], "empty"),
        ([{"user_id": "u1", "item_id": "a", "timestamp": "not a time"}], "timestamp"),
    ]:
        with pytest.raises(FeatureStoreError, match=msg):
            events_frame(bad if bad else pd.DataFrame(columns=["user_id", "item_id", "timestamp"]))


def test_synthetic_trips_become_one_basket_per_day() -> None:
    from feature_store.pipelines.purchases import SYNTHETIC_TRIP_PATTERN
    from feature_store.sources.synthetic import SyntheticConfig, generate
    from models.basket.pipeline import baskets_from_history

    ds = generate(SyntheticConfig(n_users=80, grocery_user_fraction=1.0, n_items=200, n_creators=20))
    lines = purchases(ds.interactions, SYNTHETIC_TRIP_PATTERN)
    t = lines["timestamp"].max() + pd.Timedelta(seconds=1)
    rows = latest_rows(compute_purchase_history(lines, [t], show_progress=False))
    data = baskets_from_history(rows, "synthetic", min_baskets=1)
    trips = lines.assign(day=lines["timestamp"].dt.floor("D")).groupby("user_id")["day"].nunique()
    for u, user in enumerate(data.users.tolist()):
        assert len(data.basket_items[u]) == trips[user]
        assert np.all(np.diff(data.basket_days[u]) > 0)  # one basket per purchase day
