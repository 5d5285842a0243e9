"""LTE features: the lagged-window leakage guard, the average variant and the fixed-decoder autoencoder."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from feature_store.pipelines import lte as lte_mod
from feature_store.pipelines.basis import SemanticBasis
from feature_store.pipelines.lte import (
    LTE_COLUMNS,
    LTEAutoencoder,
    LTEWindow,
    compute_lte_autoencoder,
    compute_lte_average,
    default_lte,
    evaluate_lte_autoencoder,
    load_lte_autoencoder,
    save_lte_autoencoder,
    snapshot_times,
    train_lte_autoencoder,
)

T0 = pd.Timestamp("2024-03-01 12:00", tz="UTC")
US = timedelta(microseconds=1)


def make_basis(n_items: int = 12, dim: int = 6, seed: int = 0, encoder: str = "test") -> SemanticBasis:
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(n_items, dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return SemanticBasis(encoder=encoder, item_ids=np.array([f"i{k}" for k in range(n_items)]), vectors=vec)


def events(rows: list[tuple[str, str, pd.Timestamp]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[us, UTC]")
    return df


def vec(basis: SemanticBasis, item: str) -> np.ndarray:
    return basis.vectors[basis.positions([item])[0]].astype(np.float64)


# ------------------------------------------------------------------------------------------------
# Window, schedule


def test_window_validation_and_roundtrip() -> None:
    with pytest.raises(ValueError):
        LTEWindow(lag=timedelta(days=-1), window=timedelta(days=1))
    with pytest.raises(ValueError):
        LTEWindow(lag=timedelta(0), window=timedelta(0))
    w = LTEWindow(lag=timedelta(days=2), window=timedelta(days=30))
    assert LTEWindow.from_dict(w.to_dict()) == w
    assert w.bounds(T0) == (T0 - timedelta(days=32), T0 - timedelta(days=2))


def test_snapshot_times_inclusive_grid() -> None:
    times = snapshot_times("2024-01-01", "2024-01-03", timedelta(days=1))
    assert times == [pd.Timestamp(f"2024-01-0{d}", tz="UTC") for d in (1, 2, 3)]
    assert len(snapshot_times("2024-01-01", "2024-01-02 23:00", timedelta(days=1))) == 2
    assert snapshot_times("2024-01-02", "2024-01-01", timedelta(days=1)) == []
    with pytest.raises(ValueError):
        snapshot_times("2024-01-01", "2024-01-02", timedelta(0))


# ------------------------------------------------------------------------------------------------
# Leakage guard


def test_window_bounds_exact_microseconds() -> None:
    """Upper bound T - lag is EXCLUSIVE (1 µs earlier is in); lower bound T - lag - window is INCLUSIVE."""
    basis = make_basis()
    w = LTEWindow(lag=timedelta(days=1), window=timedelta(days=10))
    lo, hi = w.bounds(T0)
    df = events(
        [
            ("a", "i0", hi),  # exactly T - lag: excluded (belongs to the short-term sequence)
            ("a", "i1", hi - US),  # just before T - lag: included
            ("a", "i2", lo),  # exactly the lower bound: included
            ("a", "i3", lo - US),  # just before the lower bound: excluded
            ("a", "i4", T0),  # at T: excluded
            ("a", "i5", T0 + timedelta(days=1)),  # future: excluded
            ("b", "i0", hi),  # only boundary / future events: no row at all
            ("b", "i6", T0 - US),
        ]
    )
    out = compute_lte_average(df, basis, w, [T0])
    assert out["user_id"].tolist() == ["a"]
    row = out.iloc[0]
    assert row["n_items"] == 2
    np.testing.assert_allclose(row["lte"], (vec(basis, "i1") + vec(basis, "i2")) / 2, rtol=1e-6, atol=1e-7)
    assert row["event_timestamp"] == T0 and row["created_timestamp"] == T0


def test_item_at_exact_upper_bound_never_leaks_into_any_snapshot() -> None:
    """Moving T by one microsecond moves the boundary event in: the rule is the same at every T."""
    basis = make_basis()
    w = LTEWindow(lag=timedelta(hours=6), window=timedelta(days=3))
    t_event = T0 - w.lag
    df = events([("a", "i0", t_event - timedelta(days=1)), ("a", "i7", t_event)])
    out = compute_lte_average(df, basis, w, [T0, T0 + US])
    by_t = {r.event_timestamp: r for r in out.itertuples()}
    assert by_t[T0].n_items == 1
    np.testing.assert_allclose(by_t[T0].lte, vec(basis, "i0"), atol=1e-7)
    assert by_t[T0 + US].n_items == 2


def brute_force_lte(df: pd.DataFrame, basis: SemanticBasis, w: LTEWindow, as_of: list[pd.Timestamp]) -> dict:
    """Straight from the definition, one (user, T) at a time."""
    out = {}
    for t in as_of:
        lo, hi = w.bounds(t)
        sel = df[(df["timestamp"] >= lo) & (df["timestamp"] < hi)]
        for user, g in sel.groupby("user_id"):
            pos = basis.positions(g["item_id"].tolist())
            pos = pos[pos >= 0]
            if len(pos):
                out[(user, t)] = (basis.vectors[pos].astype(np.float64).mean(axis=0), len(pos))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_matches_brute_force_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    basis = make_basis(n_items=15, dim=5, seed=seed)
    w = LTEWindow(lag=timedelta(days=int(rng.integers(0, 4))), window=timedelta(days=int(rng.integers(2, 15))))
    n = 600
    start = pd.Timestamp("2024-01-01", tz="UTC")
    offsets = rng.integers(0, 40 * 86_400_000_000, size=n)
    as_of = [start + timedelta(days=int(d)) for d in rng.integers(5, 45, size=6)]
    # Put some events exactly on window boundaries of the snapshots.
    ts = start + pd.to_timedelta(offsets, unit="us")
    boundary = [b for t in as_of for b in w.bounds(t)]
    ts = pd.DatetimeIndex(list(ts[: -len(boundary)]) + boundary)
    df = events(
        list(
            zip(
                [f"u{k}" for k in rng.integers(0, 25, size=n)],
                # ~10% of events are items outside the basis (ignored)
                [f"i{k}" if k < 15 else f"x{k}" for k in rng.integers(0, 17, size=n)],
                ts,
                strict=True,
            )
        )
    )
    out = compute_lte_average(df, basis, w, [*as_of, as_of[0]], show_progress=False)  # duplicates collapse
    expected = brute_force_lte(df, basis, w, sorted(set(as_of)))
    got = {(r.user_id, r.event_timestamp): (r.lte, r.n_items) for r in out.itertuples()}
    assert set(got) == set(expected)
    for key, (mean, count) in expected.items():
        assert got[key][1] == count
        assert np.allclose(got[key][0], mean, atol=1e-6)
        # A mean of unit vectors lies in their convex hull: never longer than 1.
        assert np.linalg.norm(got[key][0]) <= 1 + 1e-5


def test_repeated_items_count_repeatedly_and_unknown_items_are_ignored() -> None:
    basis = make_basis()
    w = LTEWindow(lag=timedelta(0), window=timedelta(days=5))
    df = events(
        [
            ("a", "i0", T0 - timedelta(days=1)),
            ("a", "i0", T0 - timedelta(days=2)),
            ("a", "i1", T0 - timedelta(days=3)),
            ("a", "unknown", T0 - timedelta(days=1)),
            ("c", "unknown", T0 - timedelta(days=1)),  # only items outside the basis: no row
        ]
    )
    out = compute_lte_average(df, basis, w, [T0])
    assert out["user_id"].tolist() == ["a"]
    assert out["n_items"].iloc[0] == 3
    np.testing.assert_allclose(out["lte"].iloc[0], (2 * vec(basis, "i0") + vec(basis, "i1")) / 3, atol=1e-7)


def test_output_contract_and_parquet_types() -> None:
    basis = make_basis(dim=6)
    w = LTEWindow(lag=timedelta(days=1), window=timedelta(days=5))
    df = events([("a", "i0", T0 - timedelta(days=2)), ("b", "i1", T0 - timedelta(days=3))])
    for out in (
        compute_lte_average(df, basis, w, [T0, T0 + timedelta(days=1)]),
        compute_lte_average(df, basis, w, [T0 - timedelta(days=30)]),  # empty
        compute_lte_average(df.iloc[:0], basis, w, [T0]),  # no data
    ):
        assert tuple(out.columns) == LTE_COLUMNS
        assert str(out["event_timestamp"].dtype) == "datetime64[us, UTC]"
        assert str(out["created_timestamp"].dtype) == "datetime64[us, UTC]"
        assert out["n_items"].dtype == np.int64
        schema = pa.Table.from_pandas(out, preserve_index=False).schema
        if len(out):
            assert schema.field("lte").type == pa.list_(pa.float32())
            assert schema.field("user_id").type == pa.string()
            assert all(v.dtype == np.float32 and v.shape == (6,) for v in out["lte"])
    out = compute_lte_average(df, basis, w, [T0, T0 + timedelta(days=1)])
    assert list(zip(out["user_id"], out["event_timestamp"], strict=True)) == [
        ("a", T0),
        ("b", T0),
        ("a", T0 + timedelta(days=1)),
        ("b", T0 + timedelta(days=1)),
    ]
    assert np.array_equal(default_lte(6), np.zeros(6, dtype=np.float32))


def test_naive_as_of_is_utc() -> None:
    basis = make_basis()
    w = LTEWindow(lag=timedelta(days=1), window=timedelta(days=5))
    df = events([("a", "i0", T0 - timedelta(days=2))])
    naive = compute_lte_average(df, basis, w, [T0.tz_localize(None)])
    assert naive["event_timestamp"].tolist() == [T0]


def test_progress_with_many_snapshots_on_non_tty(capfd: pytest.CaptureFixture[str]) -> None:
    basis = make_basis()
    w = LTEWindow(lag=timedelta(hours=1), window=timedelta(days=3))
    df = events([("a", f"i{k % 12}", T0 + timedelta(hours=5 * k)) for k in range(100)])
    times = snapshot_times(T0, T0 + timedelta(days=20), timedelta(days=1))
    assert len(times) >= lte_mod.PROGRESS_MIN_STEPS
    with_bar = compute_lte_average(df, basis, w, times, show_progress=True)
    without = compute_lte_average(df, basis, w, times, show_progress=False)
    capfd.readouterr()
    pd.testing.assert_frame_equal(with_bar.drop(columns="lte"), without.drop(columns="lte"))
    assert all(np.array_equal(a, b) for a, b in zip(with_bar["lte"], without["lte"], strict=True))


# ------------------------------------------------------------------------------------------------
# Autoencoder


@pytest.fixture(scope="module")
def toy() -> tuple[SemanticBasis, pd.DataFrame, LTEWindow, list[pd.Timestamp]]:
    """4 topics x 8 items; each user consumes (mostly) one topic. The basis clusters by topic."""
    rng = np.random.default_rng(7)
    n_topics, per_topic, dim = 4, 8, 8
    centroids = rng.normal(size=(n_topics, dim))
    topic = np.repeat(np.arange(n_topics), per_topic)
    vecs = centroids[topic] + 0.35 * rng.normal(size=(n_topics * per_topic, dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    basis = SemanticBasis(encoder="toy", item_ids=np.array([f"i{k}" for k in range(len(vecs))]), vectors=vecs)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for u in range(80):
        t = u % n_topics
        favourites = rng.choice(np.flatnonzero(topic == t), size=4, replace=False)
        for _ in range(30):
            item = rng.choice(favourites) if rng.random() < 0.9 else rng.integers(0, len(vecs))
            rows.append((f"u{u:02d}", f"i{item}", start + timedelta(seconds=int(rng.integers(0, 60 * 86_400)))))
    w = LTEWindow(lag=timedelta(days=3), window=timedelta(days=30))
    as_of = snapshot_times("2024-01-20", "2024-02-25", timedelta(days=6))
    return basis, events(rows), w, as_of


def train(toy: tuple, **kw: object) -> LTEAutoencoder:
    basis, df, w, as_of = toy
    params: dict = {"epochs": 25, "seed": 3, "hidden": 32, "batch_size": 64, "show_progress": False} | kw
    return train_lte_autoencoder(df, basis, w, as_of, **params)


@pytest.fixture(scope="module")
def trained(toy: tuple) -> LTEAutoencoder:
    return train(toy)


def test_decoder_is_the_basis_and_stays_bit_identical(toy: tuple, trained: LTEAutoencoder) -> None:
    basis = toy[0]
    assert "basis" not in dict(trained.named_parameters())
    assert "basis" in dict(trained.named_buffers())
    assert not any(k.startswith("basis") for k in trained.state_dict())
    assert trained.basis.numpy().tobytes() == basis.vectors.tobytes()
    z = torch.randn(3, basis.dim)
    torch.testing.assert_close(trained.item_logits(z), z @ torch.from_numpy(basis.vectors).T / 0.1)


def test_training_reduces_loss(toy: tuple, trained: LTEAutoencoder) -> None:
    basis, df, w, as_of = toy
    initial = train(toy, epochs=0)
    before = evaluate_lte_autoencoder(initial, df, basis, w, as_of)
    after = evaluate_lte_autoencoder(trained, df, basis, w, as_of)
    assert after < before - 0.15
    history = trained.config.training["loss_history"]
    assert len(history) == 25 and history[-1] < history[0]


def window_item_auc(model: LTEAutoencoder, toy: tuple) -> float:
    """Mean over (user, T) of P(score of a window item > score of a non-window item) under the decoder."""
    basis, df, w, as_of = toy
    out = compute_lte_autoencoder(model, df, basis, w, as_of, show_progress=False)
    aucs = []
    for r in out.itertuples():
        lo, hi = w.bounds(r.event_timestamp)
        mine = df[(df.user_id == r.user_id) & (df.timestamp >= lo) & (df.timestamp < hi)]
        pos = np.unique(basis.positions(mine["item_id"].tolist()))
        neg = np.setdiff1d(np.arange(len(basis.item_ids)), pos)
        logits = model.item_logits(torch.from_numpy(r.lte[None, :])).numpy()[0]
        aucs.append((logits[pos][:, None] > logits[neg][None, :]).mean())
    return float(np.mean(aucs))


def test_reconstruction_ranks_window_items_above_others(toy: tuple, trained: LTEAutoencoder) -> None:
    auc = window_item_auc(trained, toy)
    assert auc > 0.85
    # ...and better than the untrained encoder (= the plain average of variant (a)).
    assert auc > window_item_auc(train(toy, epochs=0), toy) + 0.005


def test_autoencoder_output_contract_matches_average(toy: tuple, trained: LTEAutoencoder) -> None:
    basis, df, w, as_of = toy
    ae = compute_lte_autoencoder(trained, df, basis, w, as_of, show_progress=False)
    avg = compute_lte_average(df, basis, w, as_of, show_progress=False)
    assert tuple(ae.columns) == LTE_COLUMNS
    pd.testing.assert_frame_equal(ae.drop(columns="lte"), avg.drop(columns="lte"))
    assert all(v.dtype == np.float32 and v.shape == (basis.dim,) for v in ae["lte"])
    assert pa.Table.from_pandas(ae).schema.field("lte").type == pa.list_(pa.float32())


def test_untrained_encoder_starts_at_the_average(toy: tuple) -> None:
    basis, df, w, as_of = toy
    ae = compute_lte_autoencoder(train(toy, epochs=0), df, basis, w, as_of, show_progress=False)
    avg = compute_lte_average(df, basis, w, as_of, show_progress=False)
    assert np.allclose(np.stack(ae["lte"]), np.stack(avg["lte"]), atol=1e-6)


def test_training_is_deterministic_in_seed(toy: tuple, trained: LTEAutoencoder) -> None:
    again = train(toy)
    for k, v in trained.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    other = train(toy, seed=4)
    assert not torch.equal(trained.state_dict()["encoder.0.weight"], other.state_dict()["encoder.0.weight"])


def test_save_load_roundtrip(tmp_path: Path, toy: tuple, trained: LTEAutoencoder) -> None:
    basis, df, w, as_of = toy
    save_lte_autoencoder(trained, tmp_path / "enc")
    loaded = load_lte_autoencoder(tmp_path / "enc", basis)
    a = compute_lte_autoencoder(trained, df, basis, w, as_of, show_progress=False)
    b = compute_lte_autoencoder(loaded, df, basis, w, as_of, show_progress=False)
    assert all(np.array_equal(x, y) for x, y in zip(a["lte"], b["lte"], strict=True))
    assert loaded.config.training == trained.config.training
    other = SemanticBasis(encoder="other", item_ids=basis.item_ids, vectors=basis.vectors)
    with pytest.raises(ValueError, match="basis"):
        load_lte_autoencoder(tmp_path / "enc", other)
    with pytest.raises(ValueError, match="basis"):
        compute_lte_autoencoder(trained, df, other, w, as_of)
    assert load_lte_autoencoder(tmp_path / "enc", other, strict_basis=False).basis_fingerprint == other.fingerprint


def test_training_targets_mix_window_and_following_period() -> None:
    """Window part from [T-lag-window, T-lag); future part from [T, T+horizon), each normalised."""
    basis = make_basis()
    w = LTEWindow(lag=timedelta(days=1), window=timedelta(days=5))
    df = events(
        [
            ("a", "i0", T0 - timedelta(days=2)),
            ("a", "i3", T0 - timedelta(hours=1)),  # in [T - lag, T): neither input nor target
            ("a", "i1", T0),  # first instant of the future period: target
            ("a", "i2", T0 + w.lag),  # end of the future period (exclusive): ignored
            ("b", "i4", T0 - timedelta(days=3)),  # no future events: reconstruction only
        ]
    )
    ev = lte_mod._prepare_events(df, basis)
    s = lte_mod._build_samples(ev, basis, w, lte_mod.as_of_us([T0]), w.lag_us, 0.25, False)
    dense = s.targets.toarray()
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=1e-6)
    pos = dict(zip(basis.item_ids, range(len(basis.item_ids)), strict=True))
    a, b = (0, 1) if ev.user_ids[0] == "a" else (1, 0)
    assert dense[a, pos["i0"]] == pytest.approx(0.75) and dense[a, pos["i1"]] == pytest.approx(0.25)
    assert dense[a, pos["i2"]] == 0 and dense[a, pos["i3"]] == 0
    assert dense[b, pos["i4"]] == pytest.approx(1.0)
    np.testing.assert_allclose(s.mean[a], vec(basis, "i0"), atol=1e-7)
