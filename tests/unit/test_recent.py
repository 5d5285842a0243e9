"""Recent-items and item features: strictly-before-as-of semantics, ordering, truncation, types."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feature_store.pipelines.basis import SemanticBasis
from feature_store.pipelines.recent import (
    ITEM_FEATURE_COLUMNS,
    RECENT_COLUMNS,
    compute_item_features,
    compute_recent_items,
)

T0 = pd.Timestamp("2024-05-01 08:00", tz="UTC")
US = timedelta(microseconds=1)


def events(rows: list[tuple[str, str, pd.Timestamp]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[us, UTC]")
    return df


def unix_s(ts: pd.Timestamp) -> int:
    return int(ts.as_unit("us").value // 1_000_000_000)


def test_strictly_before_as_of_and_most_recent_last() -> None:
    df = events(
        [
            ("a", "i2", T0 - timedelta(hours=1)),
            ("a", "i9", T0),  # at as_of: not yet known
            ("a", "i1", T0 - timedelta(hours=2)),
            ("a", "i3", T0 - US),  # 1 µs before: included, and the most recent
            ("a", "i8", T0 + timedelta(days=1)),
            ("b", "i5", T0),  # only at/after as_of: no row
        ]
    )
    out = compute_recent_items(df, [T0])
    assert tuple(out.columns) == RECENT_COLUMNS
    assert out["user_id"].tolist() == ["a"]
    row = out.iloc[0]
    assert row["item_ids"] == ["i1", "i2", "i3"]
    assert row["timestamps"] == [unix_s(T0 - timedelta(hours=2)), unix_s(T0 - timedelta(hours=1)), unix_s(T0 - US)]
    assert row["event_timestamp"] == T0 and row["created_timestamp"] == T0


def test_truncation_keeps_the_latest_and_ties_keep_input_order() -> None:
    rows = [("a", f"i{k}", T0 - timedelta(minutes=100 - k)) for k in range(10)]
    rows += [("a", "tie1", T0 - timedelta(minutes=1)), ("a", "tie2", T0 - timedelta(minutes=1))]
    out = compute_recent_items(events(rows[::-1][2:] + rows[-2:]), [T0], max_len=4)
    assert out["item_ids"].iloc[0] == ["i8", "i9", "tie1", "tie2"]
    with pytest.raises(ValueError):
        compute_recent_items(events(rows), [T0], max_len=0)


def test_matches_brute_force_over_many_snapshots() -> None:
    rng = np.random.default_rng(0)
    n = 500
    start = pd.Timestamp("2024-01-01", tz="UTC")
    df = events(
        list(
            zip(
                [f"u{k}" for k in rng.integers(0, 20, size=n)],
                [f"i{k}" for k in rng.integers(0, 30, size=n)],
                start + pd.to_timedelta(rng.integers(0, 30 * 86_400_000_000, size=n), unit="us"),
                strict=True,
            )
        )
    )
    as_of = [start + timedelta(days=d) for d in range(0, 32, 3)]
    out = compute_recent_items(df, as_of, max_len=7)
    got = {(r.user_id, r.event_timestamp): (r.item_ids, r.timestamps) for r in out.itertuples()}
    expected = {}
    for t in as_of:
        before = df[df["timestamp"] < t].sort_values("timestamp", kind="stable")
        for user, g in before.groupby("user_id"):
            tail = g.tail(7)
            expected[(user, t)] = (tail["item_id"].tolist(), [unix_s(x) for x in tail["timestamp"]])
    assert got == expected
    assert out["event_timestamp"].is_monotonic_increasing


def test_recent_items_parquet_types_and_empty() -> None:
    df = events([("a", "i1", T0 - timedelta(hours=1))])
    schema = pa.Table.from_pandas(compute_recent_items(df, [T0]), preserve_index=False).schema
    assert schema.field("item_ids").type == pa.list_(pa.string())
    assert schema.field("timestamps").type == pa.list_(pa.int64())
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    empty = compute_recent_items(df, [T0 - timedelta(days=1)])
    assert tuple(empty.columns) == RECENT_COLUMNS and len(empty) == 0
    assert str(empty["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_item_features_popularity_creator_and_content() -> None:
    basis = SemanticBasis(
        encoder="test", item_ids=np.array(["i1", "i2"]), vectors=np.array([[1, 0], [0.6, 0.8]], dtype=np.float32)
    )
    items = pd.DataFrame({"item_id": ["i1", "i2", "i3"], "creator_id": ["c1", None, "c3"]})
    df = events(
        [
            ("a", "i1", T0 - timedelta(days=2)),
            ("b", "i1", T0 - US),
            ("a", "i1", T0),  # at T0: counted only from the next snapshot on
            ("a", "i2", T0 + timedelta(hours=1)),
            ("a", "zz", T0 - timedelta(days=1)),  # not in the catalog: ignored
        ]
    )
    t1 = T0 + timedelta(days=1)
    out = compute_item_features(items, df, basis, [t1, T0])  # unsorted as-of times are sorted
    assert tuple(out.columns) == (*ITEM_FEATURE_COLUMNS, "content")
    assert out["event_timestamp"].tolist() == [T0] * 3 + [t1] * 3
    assert out["item_id"].tolist() == ["i1", "i2", "i3"] * 2
    assert out["popularity"].tolist() == [2, 0, 0, 3, 1, 0]
    assert out["popularity"].dtype == np.int64
    assert out["creator_id"].tolist() == ["c1", "", "c3"] * 2
    np.testing.assert_array_equal(out["content"].iloc[1], np.array([0.6, 0.8], dtype=np.float32))
    np.testing.assert_array_equal(out["content"].iloc[2], np.zeros(2, dtype=np.float32))  # outside the basis
    schema = pa.Table.from_pandas(out, preserve_index=False).schema
    assert schema.field("content").type == pa.list_(pa.float32())
    assert schema.field("creator_id").type == pa.string()

    plain = compute_item_features(items.drop(columns="creator_id"), df, None, [T0])
    assert tuple(plain.columns) == ITEM_FEATURE_COLUMNS
    assert plain["creator_id"].tolist() == ["", "", ""]
