"""build_inputs (shared by training and serving) and example construction honour the lag boundary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.sequential.data import US, LagPolicy, query_inputs, training_chunks
from models.sequential.features import build_inputs, exclude_mask, lag_boundary

DAY = 86_400
INDEX = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}


def test_sequence_starts_exactly_at_the_lte_horizon() -> None:
    as_of, lag = 100 * DAY, 7 * DAY
    boundary = as_of - lag
    ids = ["a", "b", "c", "d"]
    ts = [boundary - 1, boundary, boundary + 5, as_of + 10]
    seq, lte = build_inputs(ids, ts, np.ones(3), INDEX, 5, as_of, lag)
    # "a" (1 s before the horizon) belongs to the LTE window [S - lag - window, S - lag): never in the sequence
    assert seq.tolist() == [0, 0, 2, 3, 4]
    assert lte is not None and lte.dtype == np.float32


def test_boundary_rounds_up_for_fractional_as_of() -> None:
    # an event floored to second b is at/after the exact boundary only if b >= ceil(boundary)
    assert lag_boundary(100.4, 10) == 91
    assert lag_boundary(100.0, 10) == 90
    assert lag_boundary(None, 10) is None
    seq, _ = build_inputs([1, 2], [90, 91], None, None, 4, 100.4, 10)
    assert seq.tolist() == [0, 0, 0, 2]


def test_no_lag_keeps_the_last_max_len_known_items() -> None:
    seq, lte = build_inputs(["a", "zzz", "b", "c", "d", "e"], [1, 2, 3, 4, 5, 6], None, INDEX, 3, None, None)
    assert seq.tolist() == [3, 4, 5]
    assert lte is None
    seq, _ = build_inputs(["zzz", "b"], [1, 2], None, INDEX, 4, None, None)  # unknown items are dropped
    assert seq.tolist() == [0, 0, 0, 2]


def test_missing_lte_becomes_the_documented_zero_default() -> None:
    _, lte = build_inputs([], [], None, INDEX, 4, 10.0, 1.0, lte_dim=3)
    assert lte is not None and lte.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        build_inputs([], [], np.ones(2), INDEX, 4, 10.0, 1.0, lte_dim=3)
    with pytest.raises(ValueError):
        build_inputs(["a"], [], None, INDEX, 4, None, None)


def test_exclude_mask_marks_history_and_padding() -> None:
    mask = exclude_mask([np.array([1, 3]), np.array([], dtype=np.int64)], 4)
    assert mask.tolist() == [[True, True, False, True, False], [True, False, False, False, False]]


def test_snapshot_grid_matches_build_lte() -> None:
    pol = LagPolicy(lag_us=2 * DAY * US, as_of_us=30 * DAY * US, every_us=7 * DAY * US)
    t = np.array([30 * DAY, 23 * DAY, 23 * DAY - 1, 29 * DAY, 40 * DAY])
    assert (pol.snapshot_us(t) // US).tolist() == [30 * DAY, 23 * DAY, 16 * DAY, 23 * DAY, 30 * DAY]


def _history(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item k is the k-th event (1..n), so an item index identifies its position and time."""
    ts = np.sort(rng.choice(60 * DAY, n, replace=False))
    return np.arange(1, n + 1, dtype=np.int64), ts.astype(np.int64)


@pytest.mark.parametrize("prefix", [True, False])
def test_chunks_respect_the_lag_and_cover_each_target_once(prefix: bool) -> None:
    rng = np.random.default_rng(0)
    hist = [_history(n, rng) for n in (1, 2, 30, 80)]
    pol = LagPolicy(lag_us=3 * DAY * US, as_of_us=61 * DAY * US, every_us=DAY * US) if prefix else LagPolicy.none()
    ex = training_chunks([h[0] for h in hist], [h[1] for h in hist], 10, pol, prefix=prefix)
    for row, (items, ts) in enumerate(hist):
        covered: list[int] = []
        for e in np.flatnonzero(ex.rows == row):
            seq = ex.item_seq[e][ex.item_seq[e] != 0]
            target = int(ex.target[e])
            assert ex.times[e] == ts[target - 1]
            if len(seq):
                assert (np.diff(np.r_[seq, target]) == 1).all(), "a chunk is a run of consecutive events"
            if prefix:
                snap = int(ex.snapshot_us[e])  # type: ignore[index]
                assert snap <= ex.times[e] * US, "the snapshot is at or before the example's time"
                horizon_us = snap - pol.lag_us  # type: ignore[operator]
                chunk_ts = ts[np.r_[seq, target] - 1] * US
                assert (chunk_ts >= horizon_us).all(), "no input or target inside the LTE window"
                if len(seq) < 10 and seq.size and seq[0] > 1:
                    assert ts[seq[0] - 2] * US < horizon_us, "the chunk starts right at the horizon"
                covered.extend(seq[:1].tolist())  # the prefix predicts the first input
            covered.extend(seq[1:].tolist())
            covered.append(target)
        expected = items.tolist() if prefix else items[1:].tolist()
        assert sorted(covered) == expected, "each training event is a target exactly once"


def test_chunk_inputs_are_build_inputs_of_the_history() -> None:
    """The examples use the serving function on the history before the target: one rule for both."""
    rng = np.random.default_rng(3)
    items, ts = _history(40, rng)
    pol = LagPolicy(lag_us=2 * DAY * US, as_of_us=61 * DAY * US, every_us=7 * DAY * US)
    ex = training_chunks([items], [ts], 8, pol, prefix=True)
    for e in range(len(ex)):
        j = int(np.flatnonzero((ts == ex.times[e]) & (items == ex.target[e]))[-1])
        expected, _ = build_inputs(items[:j], ts[:j], None, None, 8, ex.snapshot_us[e] / US, 2 * DAY)  # type: ignore[index]
        assert ex.item_seq[e].tolist() == expected.tolist()
        seq_ts = ts[:j][-int((ex.item_seq[e] != 0).sum()) :] if (ex.item_seq[e] != 0).any() else np.array([])
        assert (seq_ts * US >= ex.snapshot_us[e] - pol.lag_us).all()  # type: ignore[operator,index]
    q = query_inputs([items[:-1]], [ts[:-1]], ts[-1:], items[-1:], 8, pol)
    expected, _ = build_inputs(items[:-1], ts[:-1], None, None, 8, q.snapshot_us[0] / US, 2 * DAY)  # type: ignore[index]
    assert q.item_seq[0].tolist() == expected.tolist()


def test_policy_from_a_version_uses_its_exact_grid() -> None:
    from types import SimpleNamespace

    from feature_store.versions import ComputationWindow

    as_of = pd.Timestamp("2024-12-30T21:11:09.545360Z")
    window = ComputationWindow(
        as_of=as_of.to_pydatetime(), lag_seconds=7 * DAY, window_seconds=365 * DAY, snapshot_every_seconds=14 * DAY
    )
    pol = LagPolicy.from_spec(SimpleNamespace(window=window))  # type: ignore[arg-type]
    assert pol.as_of_us == as_of.value // 1000 and pol.lag_seconds == 7 * DAY
    t = int(as_of.timestamp()) - 20 * DAY  # between the snapshots as_of - 28 d and as_of - 14 d
    assert pol.snapshot_us(np.array([t]))[0] == as_of.value // 1000 - 28 * DAY * US
