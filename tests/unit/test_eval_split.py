"""Leave-one-out split: time order, stable ties, the min_len filter, the catalogue, and the valid/test views.

A wrong split leaks targets into training or silently changes which item is held out, and every
model result inherits the error, so each rule of the protocol is checked on a hand-built frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.eval.split import PAD_ID, leave_one_out


def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(user, item, unix seconds) rows as a canonical interactions frame."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True).astype("datetime64[us, UTC]")
    return df


@pytest.fixture()
def data() -> pd.DataFrame:
    # Rows deliberately out of time order. User b has a timestamp tie (items y then x at t=20, in
    # that row order). User c has only two events and must be dropped; its item "only_c" stays in
    # the catalogue.
    return frame(
        [
            ("a", "m3", 30),
            ("b", "y", 20),
            ("a", "m1", 10),
            ("c", "only_c", 5),
            ("b", "z", 30),
            ("a", "m2", 20),
            ("b", "x", 20),
            ("c", "m1", 6),
            ("a", "m4", 40),
            ("b", "w", 10),
        ]
    )


def names(split, seq: np.ndarray) -> list[str]:
    return [str(split.item_ids[i]) for i in seq]


def test_order_ties_and_filter(data: pd.DataFrame) -> None:
    split = leave_one_out(data, "toy")
    assert split.users.tolist() == ["a", "b"]
    assert split.dropped_users == 1
    assert names(split, split.sequences[0]) == ["m1", "m2", "m3", "m4"]
    assert names(split, split.sequences[1]) == ["w", "y", "x", "z"]  # tie at t=20 keeps row order y, x
    assert split.timestamps[0].tolist() == [10, 20, 30, 40]
    assert split.timestamps[1].dtype == np.int64
    assert all(s.dtype == np.int64 for s in split.sequences)


def test_catalogue_has_every_item_and_padding(data: pd.DataFrame) -> None:
    split = leave_one_out(data, "toy")
    assert split.item_ids[0] == PAD_ID
    assert sorted(split.item_ids[1:].tolist()) == sorted(data["item_id"].unique().tolist())
    assert split.n_items == data["item_id"].nunique() == 9
    assert "only_c" in split.item_index  # from a dropped user: still part of the catalogue
    assert all(split.item_ids[j] == s for s, j in split.item_index.items())
    assert min(split.item_index.values()) == 1


def test_valid_and_test_views(data: pd.DataFrame) -> None:
    split = leave_one_out(data, "toy")
    i = 0  # a: m1 m2 m3 m4
    assert names(split, split.train_part(i)) == ["m1", "m2"]
    assert names(split, split.valid_input(i)) == ["m1", "m2"]
    assert split.item_ids[split.valid_target(i)] == "m3"
    assert names(split, split.test_input(i)) == ["m1", "m2", "m3"]
    assert split.item_ids[split.test_target(i)] == "m4"
    assert split.target_time(i, "valid") == 30 and split.target_time(i, "test") == 40
    assert split.targets(np.array([0, 1]), "test").tolist() == [split.test_target(0), split.test_target(1)]
    assert names(split, split.input(1, "valid")) == ["w", "y"]
    with pytest.raises(ValueError):
        split.input(0, "train")  # type: ignore[arg-type]


def test_min_len_and_dedupe(data: pd.DataFrame) -> None:
    assert leave_one_out(data, "toy", min_len=4).users.tolist() == ["a", "b"]
    assert leave_one_out(data, "toy", min_len=5).users.tolist() == []
    with pytest.raises(ValueError):
        leave_one_out(data, "toy", min_len=2)
    rep = frame([("u", "p", 1), ("u", "p", 2), ("u", "q", 3), ("u", "p", 4), ("u", "r", 5)])
    kept = leave_one_out(rep, "rep")
    assert names(kept, kept.sequences[0]) == ["p", "p", "q", "p", "r"]
    deduped = leave_one_out(rep, "rep", dedupe_consecutive=True)
    assert names(deduped, deduped.sequences[0]) == ["p", "q", "p", "r"]  # only immediate repeats collapse
    assert deduped.timestamps[0].tolist() == [1, 3, 4, 5]


def test_split_does_not_depend_on_row_order(data: pd.DataFrame) -> None:
    a = leave_one_out(data, "toy")
    # Shuffle rows but keep the relative order of the tied pair (b, y) before (b, x).
    shuffled = data.sample(frac=1.0, random_state=3)
    tie = shuffled.index.isin([1, 6])
    shuffled.loc[tie] = data.loc[[1, 6]].to_numpy()
    b = leave_one_out(shuffled.reset_index(drop=True), "toy")
    assert a.users.tolist() == b.users.tolist()
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    assert a.item_ids.tolist() == b.item_ids.tolist()


def test_empty_interactions_give_an_empty_split() -> None:
    split = leave_one_out(frame([]), "empty")
    assert len(split) == 0 and split.n_items == 0 and split.dropped_users == 0
