"""models.basket data/split, repeat-explore metrics and the baselines, on small hand-made baskets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from feature_store.sources.schema import Dataset
from models.basket.baselines import TIFUKNN, GTopFreq, PTopFreq, TIFUParams, tifu_user_vectors
from models.basket.data import (
    from_dataset,
    item_popularity,
    make_queries,
    popularity_order,
    split_users,
    training_targets,
)
from models.basket.evaluate import basket_metrics, dense_scores


def _dataset(rows: list[tuple[str, str, str]]) -> Dataset:
    """(user, item, date) lines; a basket is (user, date)."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "date"])
    inter = pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "item_id": frame["item_id"],
            "timestamp": pd.to_datetime(frame["date"], utc=True),
            "basket_id": frame["user_id"] + ":" + frame["date"],
        }
    )
    return Dataset("toy", inter, pd.DataFrame({"item_id": sorted(frame["item_id"].unique())}))


TOY = _dataset(
    [
        ("u1", "a", "2024-01-01"), ("u1", "b", "2024-01-01"), ("u1", "a", "2024-01-08"),
        ("u1", "a", "2024-01-15"), ("u1", "c", "2024-01-15"),
        ("u2", "b", "2024-01-02"), ("u2", "c", "2024-01-09"), ("u2", "b", "2024-01-09"),
        ("u3", "d", "2024-01-03"),  # one basket only: dropped (no history)
        ("u4", "a", "2024-01-04"), ("u4", "a", "2024-01-04"), ("u4", "d", "2024-01-20"),
    ]
)  # fmt: skip


def test_baskets_are_grouped_per_day_deduplicated_and_short_users_dropped() -> None:
    data = from_dataset(TOY)
    assert data.item_ids.tolist() == ["", "a", "b", "c", "d"]
    assert data.users.tolist() == ["u1", "u2", "u4"]
    assert [b.tolist() for b in data.basket_items[0]] == [[1, 2], [1], [1, 3]]
    assert [b.tolist() for b in data.basket_items[2]] == [[1], [4]]  # the repeated line is one purchase
    assert np.diff(data.basket_days[0]).tolist() == [7, 7]
    items, days = data.history(0, 2)
    assert items.tolist() == [1, 2, 1] and (days[:2] == days[0]).all()


def test_user_split_is_72_8_20_disjoint_and_seeded() -> None:
    s = split_users(1000, seed=0)
    assert (len(s.train), len(s.valid), len(s.test)) == (720, 80, 200)
    assert len(np.intersect1d(s.train, s.test)) == 0 and len(np.intersect1d(s.valid, s.test)) == 0
    assert not np.array_equal(split_users(1000, seed=1).test, s.test)
    np.testing.assert_array_equal(split_users(1000, seed=0).test, s.test)


def test_queries_target_the_last_basket_and_training_uses_every_later_basket() -> None:
    data = from_dataset(TOY)
    q = make_queries(data, np.array([0]))
    assert q.targets[0].tolist() == [1, 3] and q.history_items[0].tolist() == [1, 2]
    assert q.as_of[0] == data.basket_days[0][2]
    t = training_targets(data, np.array([0, 1]))
    assert t.target_pos.tolist() == [1, 2, 1]
    assert popularity_order(item_popularity(data, np.array([0, 1, 2])))[:2].tolist() == [1, 2]


def test_repeat_and_explore_metrics_use_positions_in_the_same_list() -> None:
    data = from_dataset(TOY)
    q = make_queries(data, np.array([0]))  # target {a (repeat), c (explore)}
    scores = dense_scores([np.array([2, 1, 4, 3])], [np.array([4.0, 3.0, 2.0, 1.0])], data.n_items)
    m = basket_metrics(scores, q, ks=(1, 2, 4))
    assert m["P@2"] == 0.5 and m["R@2"] == 0.5 and m["R@4"] == 1.0
    assert m["rep_R@2"] == 1.0 and m["exp_R@2"] == 0.0 and m["exp_R@4"] == 1.0
    assert math.isclose(m["rep_NDCG@2"], 1.0 / math.log2(3))  # a at position 2, one repeat target
    assert m["repeat_item_share"] == 0.5 and m["rep_share@2"] == 1.0
    with pytest.raises(ValueError):
        basket_metrics(scores[:0], q)


def test_g_and_p_topfreq() -> None:
    data = from_dataset(TOY)
    q = make_queries(data, np.array([0, 1]))
    g = GTopFreq().fit(data, np.array([0, 1, 2])).score(data, q)
    assert np.argmax(g[0]) == 1 and (g[0] == g[1]).all()
    p = PTopFreq().fit(data, np.array([2])).score(data, q)
    # u1 history: a twice, b once -> a, b, then the global fill (only a from u4 is popular there).
    assert np.argsort(-p[0])[:2].tolist() == [1, 2]
    assert p[0, 3] < p[0, 2] and p[0, 4] < p[0, 2]
    assert np.argsort(-p[1])[0] == 2  # u2's history: b


def test_tifu_user_vector_decays_within_and_across_groups() -> None:
    baskets = [[np.array([1]), np.array([2]), np.array([1, 3])]]
    p = TIFUParams(k=1, within_decay=0.5, group_decay=0.1, alpha=1.0, group_size=2)
    v = tifu_user_vectors(baskets, 4, p).toarray()[0]
    # Groups (near-equal, oldest first): [b0, b1], [b2]; group weights 0.1/2 and 1/2.
    expected = np.zeros(4)
    expected[1] = 0.05 * 0.5 / 2 + 0.5
    expected[2] = 0.05 * 1.0 / 2
    expected[3] = 0.5
    np.testing.assert_allclose(v, expected)


def test_tifu_neighbours_fill_in_items_the_user_never_bought() -> None:
    data = from_dataset(TOY)
    q = make_queries(data, np.array([2]))  # u4: history {a}
    own = TIFUKNN(TIFUParams(k=1, alpha=1.0)).fit(data, np.array([0, 1])).score(data, q)
    assert np.isfinite(own[0, 1:]).all() and own[0, 1] > 0 and (own[0, 2:] == 0).all()
    mixed = TIFUKNN(TIFUParams(k=1, alpha=0.5)).fit(data, np.array([0, 1])).score(data, q)
    assert (mixed[0, 2:] > 0).any()  # the neighbour's items get a score
