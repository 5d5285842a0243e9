"""CASE: shapes, padding, the explore-invariance of the context, the ablation, ONNX parity, and the key
serving behaviour (a staple's score rises as days pass without a purchase) on a tiny trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_store.sources.schema import Dataset
from feature_store.sources.synthetic import SyntheticConfig, generate
from models.basket.data import from_dataset, item_popularity, make_queries, popularity_order, training_targets
from models.basket.export import OnnxCASE, export_case
from models.basket.features import HORIZON_DAYS, build_from_indices, pad_batch
from models.basket.model import CASE, PAD_SCORE, CASEConfig, load_checkpoint, save_checkpoint
from models.basket.train import TrainConfig, fit

# The small model that learns the synthetic cadences in a few seconds (see the staple test).
STAPLE_MODEL = dict(
    temporal_dim=32, item_dim=32, set_dim=32, n_heads=2, n_inducing=8, n_isab=1, pma_heads=2, dropout=0.0
)
TINY = dict(temporal_dim=16, item_dim=16, set_dim=32, n_heads=2, n_inducing=4, n_isab=1, pma_heads=2, dropout=0.0)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _batch(n_users: int, n_cand: int, n_items: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    days = (torch.rand(n_users, n_cand, HORIZON_DAYS, generator=g) < 0.02).float()
    ids = torch.randint(1, n_items + 1, (n_users, n_cand), generator=g)
    mask = torch.ones(n_users, n_cand)
    return days, ids, mask


def test_reference_config_concatenates_97_conv_outputs() -> None:
    cfg = CASEConfig(n_items=10)
    assert cfg.conv_out == 52 + 26 + 13 + 4 + 2 == 97
    with pytest.raises(ValueError):
        CASEConfig(n_items=10, temporal="rnn")


def test_scores_shape_padding_and_padding_invariance() -> None:
    torch.manual_seed(0)
    model = CASE(CASEConfig(n_items=30, **TINY)).eval()
    days, ids, mask = _batch(2, 6, 30)
    with torch.no_grad():
        s = model(days, ids, mask)
        # The same users with 4 extra padding candidates: real scores unchanged, padding very low.
        pad = torch.zeros(2, 4, HORIZON_DAYS)
        s_pad = model(
            torch.cat([days, pad], 1),
            torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], 1),
            torch.cat([mask, torch.zeros(2, 4)], 1),
        )
    assert s.shape == (2, 6)
    torch.testing.assert_close(s_pad[:, :6], s, atol=1e-5, rtol=0)
    assert (s_pad[:, 6:] == PAD_SCORE).all()


def test_explore_candidates_do_not_change_other_scores() -> None:
    """Unbought candidates read the set summary but are not part of it."""
    torch.manual_seed(0)
    model = CASE(CASEConfig(n_items=30, **TINY)).eval()
    days, ids, mask = _batch(1, 5, 30)
    extra_ids = torch.tensor([[7, 8, 9]])
    with torch.no_grad():
        base = model(days, ids, mask)
        more = model(
            torch.cat([days, torch.zeros(1, 3, HORIZON_DAYS)], 1), torch.cat([ids, extra_ids], 1), torch.ones(1, 8)
        )
    torch.testing.assert_close(more[:, :5], base, atol=1e-5, rtol=0)


def test_no_cnn_ablation_is_blind_to_timing_and_cnn_is_not() -> None:
    torch.manual_seed(0)
    days = torch.zeros(1, 2, HORIZON_DAYS)
    days[0, 0, -3] = 1.0
    moved = torch.zeros(1, 2, HORIZON_DAYS)
    moved[0, 0, -100] = 1.0  # the same single purchase, 97 days earlier
    ids, mask = torch.tensor([[1, 2]]), torch.ones(1, 2)
    for temporal, should_change in (("none", False), ("cnn", True)):
        model = CASE(CASEConfig(n_items=5, temporal=temporal, **TINY)).eval()
        with torch.no_grad():
            a, b = model(days, ids, mask), model(moved, ids, mask)
        assert bool((a - b).abs().max() > 1e-6) is should_change, temporal


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CASE(CASEConfig(n_items=12, **TINY)).eval()
    save_checkpoint(model, str(tmp_path / "m.pt"), {"n_explore": 3})
    loaded, extra = load_checkpoint(str(tmp_path / "m.pt"))
    days, ids, mask = _batch(2, 4, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded(days, ids, mask), model(days, ids, mask))
    assert extra == {"n_explore": 3}


def test_onnx_export_matches_torch_for_64_256_1024_candidates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CASE(CASEConfig(n_items=40)).eval()  # the reference widths
    index = ["", *[f"i{k}" for k in range(40)]]
    export_case(model, index, tmp_path, explore_items=["i3", "i1"], n_explore=2, valid_p10=0.25)
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["horizon"] == 364 and params["max_items"] == 1024 and params["valid_P@10"] == 0.25
    assert params["explore_items"] == ["i3", "i1"] and "candidate_rule" in params
    assert json.loads((tmp_path / "item_index.json").read_text()) == index
    session = OnnxCASE(tmp_path)
    names = [i.name for i in session.session.get_inputs()]
    assert names == ["purchase_days", "item_ids", "item_mask"]
    assert [o.name for o in session.session.get_outputs()] == ["scores"]
    for n in (64, 256, 1024):
        days, ids, mask = _batch(2, n, 40, seed=n)
        mask[1, n // 2 :] = 0.0
        ids[1, n // 2 :] = 0
        days[1, n // 2 :] = 0.0
        with torch.no_grad():
            expected = model(days, ids, mask).numpy()
        got = session.run(days.numpy(), ids.numpy(), mask.numpy())
        assert got.shape == (2, n) and got.dtype == np.float32
        real = mask.numpy() > 0
        np.testing.assert_allclose(got[real], expected[real], atol=1e-4, rtol=0)
        assert (got[~real] < -1e8).all()


def test_trained_tiny_case_raises_a_staple_as_days_pass_without_a_purchase(tmp_path: Path) -> None:
    """The serving behaviour: for a staple with a regular cadence, the score `cadence` days after its last
    purchase is higher than the day after it -- in torch and in the exported ONNX graph."""
    ds = generate(
        SyntheticConfig(
            n_users=50, n_items=120, n_creators=12, days=150, grocery_user_fraction=1.0,
            mean_events_per_user=3, staple_skip=0.0, impulse_per_trip=0.2, seed=3,
        )
    )  # fmt: skip
    trips = ds.interactions[ds.interactions["basket_id"].str.contains(":d")].reset_index(drop=True)
    data = from_dataset(Dataset("synthetic-trips", trips, ds.items))
    users = np.arange(len(data))
    pop = item_popularity(data, users)
    torch.manual_seed(0)
    model = CASE(CASEConfig(n_items=data.n_items, **STAPLE_MODEL))
    cfg = TrainConfig(epochs=4, lr=3e-3, patience=10, restore_best=False, seed=0)
    fit(
        model,
        data,
        training_targets(data, users[:45]),
        make_queries(data, users[45:]),
        pop,
        popularity_order(pop),
        20,
        cfg,
    )

    index = {item: i for i, item in enumerate(data.item_ids)}
    user_row = {u: i for i, u in enumerate(data.users)}
    staples = ds.meta["truth"].staples
    staples = staples[(staples["cadence_days"] >= 14) & staples["user_id"].isin(user_row)]
    just_bought, due, positions = [], [], []
    for row in staples.itertuples():
        items, days = data.history(user_row[row.user_id])
        item = index[row.item_id]
        last = int(days[items == item].max())
        keep = days <= last  # nothing bought after the staple's last purchase
        for wait, out in ((1, just_bought), (int(row.cadence_days), due)):
            out.append(build_from_indices(items[keep], days[keep], last + wait))
        positions.append((list(just_bought[-1].item_ids).index(item), list(due[-1].item_ids).index(item)))
    assert len(positions) > 50
    batch_a, batch_b = pad_batch(just_bought), pad_batch(due)
    with torch.no_grad():
        s_a = model(*map(torch.from_numpy, batch_a)).numpy()
        s_b = model(*map(torch.from_numpy, batch_b)).numpy()
    rows = np.arange(len(positions))
    pa, pb = np.array(positions).T
    rise = s_b[rows, pb] - s_a[rows, pa]
    assert rise.mean() > 0.0
    assert (rise > 0).mean() > 0.75, f"only {(rise > 0).mean():.2f} of staples rose"

    export_case(model.eval(), [str(i) for i in data.item_ids], tmp_path)
    session = OnnxCASE(tmp_path)
    o_a, o_b = session.run(*batch_a), session.run(*batch_b)
    np.testing.assert_allclose(o_a[rows, pa], s_a[rows, pa], atol=1e-4, rtol=0)
    assert ((o_b[rows, pb] - o_a[rows, pa]) > 0).mean() > 0.75


def _toy_baskets(n_items: int = 60) -> tuple[object, np.ndarray]:
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        for day in range(0, 60, 10):
            for item in rng.choice(n_items, size=3, replace=False):
                rows.append((f"u{u}", f"i{item:03d}", pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=day)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["basket_id"] = frame["user_id"] + ":" + frame["timestamp"].astype(str)
    data = from_dataset(Dataset("toy", frame, pd.DataFrame({"item_id": sorted(frame["item_id"].unique())})))
    return data, item_popularity(data, np.arange(len(data)))


def test_training_batch_samples_ten_negatives_per_positive_45_45_10() -> None:
    from models.basket.train import training_batch

    data, pop = _toy_baskets()
    queries = training_targets(data, np.arange(len(data)))
    rows = np.arange(8)
    _, ids, mask, y, w = training_batch(data, queries, rows, pop, TrainConfig(), np.random.default_rng(0), 364)
    for b, r in enumerate(rows):
        target = set(queries.targets[r].tolist())
        assert {int(i) for i in ids[b][y[b] > 0]} == target
        assert int((w[b] > 0).sum()) == len(target) * 11  # positives + 10 negatives each
        assert (w[b][mask[b] == 0] == 0).all()
        # Every history item is in the input (the set the model summarises).
        hist = set(queries.history_items[r].tolist())
        assert hist <= {int(i) for i in ids[b][mask[b] > 0]}


def test_inverse_probability_weights_stand_for_the_whole_explore_pool() -> None:
    from models.basket.train import training_batch

    data, pop = _toy_baskets()
    queries = training_targets(data, np.arange(len(data)))
    cfg = TrainConfig(negative_weighting="inverse_probability")
    rng = np.random.default_rng(1)
    r = 3
    target = queries.targets[r]
    pool = data.n_items - len(np.union1d(queries.history_items[r], target))
    totals = []
    for _ in range(300):
        _, ids, _, y, w = training_batch(data, queries, np.array([r]), pop, cfg, rng, 364)
        explore_neg = (y[0] == 0) & (w[0] > 0) & ~torch.isin(ids[0], torch.from_numpy(queries.history_items[r]))
        totals.append(float(w[0][explore_neg].sum()))
    assert abs(np.mean(totals) / pool - 1.0) < 0.15
