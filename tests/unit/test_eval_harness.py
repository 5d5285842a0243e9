"""The evaluation loop and the baselines: seen-item exclusion, repeat targets, leakage, batch invariance.

The synthetic data carries real popularity structure, so popularity must beat random there; an
oracle scorer pins the plumbing (it must reach exactly the ceiling the exclusion rule allows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.sources.synthetic import SyntheticConfig, generate
from models.eval import (
    DEFAULT_SEEDS,
    Popularity,
    RandomScores,
    SequenceSplit,
    Which,
    evaluate,
    evaluate_seeds,
    history_mask,
    leave_one_out,
    rank_users,
)

SYN = SyntheticConfig(n_users=600, n_items=1000, n_creators=60, days=120, seed=1, grocery_user_fraction=0.0)


@pytest.fixture(scope="module")
def syn() -> SequenceSplit:
    return leave_one_out(generate(SYN).interactions, "synthetic")


def frame(seqs: dict[str, list[str]]) -> pd.DataFrame:
    """Users' item sequences (in time order) as a canonical interactions frame, one event per day."""
    rows = [(u, item, k * 86_400) for u, items in seqs.items() for k, item in enumerate(items)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
    return df


def oracle(split: SequenceSplit, rows: np.ndarray, which: Which) -> np.ndarray:
    """Cheats on purpose: the target gets the top score. Only for checking the harness."""
    scores = np.zeros((len(rows), split.n_items + 1))
    scores[np.arange(len(rows)), split.targets(rows, which)] = 1.0
    return scores


def test_popularity_beats_random_on_synthetic(syn: SequenceSplit) -> None:
    pop = evaluate(Popularity().fit(syn).score_fn, syn, progress=False)
    rnd = evaluate_seeds(lambda seed: RandomScores(seed).score_fn, syn, progress=False)
    assert [r["seed"] for r in rnd] == list(DEFAULT_SEEDS)
    assert set(pop) == {"HR@10", "HR@100", "NDCG@10", "NDCG@100", "users", "repeat_targets"}
    assert pop["users"] == len(syn)
    rnd_hr = np.mean([r["HR@10"] for r in rnd])
    rnd_ndcg = np.mean([r["NDCG@100"] for r in rnd])
    assert pop["HR@10"] > 3 * rnd_hr
    assert pop["NDCG@100"] > 2 * rnd_ndcg
    # Random is at chance: HR@100 ≈ 100 / (candidates) with the ceiling set by repeat targets.
    assert rnd[0]["HR@100"] < 0.2


def test_oracle_reaches_exactly_the_exclusion_ceiling(syn: SequenceSplit) -> None:
    for which in ("valid", "test"):
        res = evaluate(oracle, syn, which=which, ks=(1, 10), progress=False)
        ceiling = 1.0 - res["repeat_targets"]
        assert res["HR@1"] == pytest.approx(ceiling) and res["NDCG@10"] == pytest.approx(ceiling)
        res = evaluate(oracle, syn, which=which, ks=(1,), exclude_seen=False, progress=False)
        assert res["HR@1"] == 1.0


def test_repeat_target_is_a_miss_and_is_reported() -> None:
    split = leave_one_out(frame({"u1": ["a", "b", "a"], "u2": ["a", "b", "c"]}), "toy")
    res = evaluate(oracle, split, ks=(1,), progress=False)
    assert res["repeat_targets"] == 0.5
    assert res["HR@1"] == 0.5  # u1's target "a" is in its history, masked, unreachable
    ranked = rank_users(oracle, split, progress=False)
    assert ranked.repeat.tolist() == [True, False]


def test_test_history_includes_the_validation_target() -> None:
    split = leave_one_out(frame({"u": ["a", "b", "c", "d"]}), "toy")
    idx = split.item_index
    valid_seen = history_mask(split, np.array([0]), "valid")[0]
    test_seen = history_mask(split, np.array([0]), "test")[0]
    assert np.flatnonzero(valid_seen).tolist() == sorted([idx["a"], idx["b"]])
    assert np.flatnonzero(test_seen).tolist() == sorted([idx["a"], idx["b"], idx["c"]])

    def prefers_c_then_d(s: SequenceSplit, rows: np.ndarray, which: Which) -> np.ndarray:
        scores = np.zeros((len(rows), s.n_items + 1))
        scores[:, idx["c"]], scores[:, idx["d"]] = 2.0, 1.0
        return scores

    # "c" (valid target, now history) is removed at test time, so "d" is ranked first.
    assert evaluate(prefers_c_then_d, split, ks=(1,), progress=False)["HR@1"] == 1.0
    assert evaluate(prefers_c_then_d, split, ks=(1,), exclude_seen=False, progress=False)["HR@1"] == 0.0


def test_popularity_counts_train_parts_only() -> None:
    # "hot" is every user's test target but occurs once in a training part; "old" fills the
    # training parts; "v" is every user's validation target. Counting all events would make
    # "hot" and "v" the most popular items, which is exactly the leak.
    seqs = {f"u{k}": ["old", "x", "v", "hot"] for k in range(5)}
    seqs["w"] = ["hot", "old", "v", "y"]
    split = leave_one_out(frame(seqs), "toy")
    pop = Popularity().fit(split)
    assert pop.counts is not None
    counts = {item: pop.counts[split.item_index[item]] for item in ("hot", "old", "v", "x", "y")}
    assert counts == {"hot": 1.0, "old": 6.0, "v": 0.0, "x": 5.0, "y": 0.0}
    assert pop.counts[0] == 0.0
    scores = pop.score_fn(split, np.arange(len(split)), "test")
    assert scores.shape == (len(split), split.n_items + 1)
    assert (scores[:, split.item_index["old"]] > scores[:, split.item_index["hot"]]).all()


def test_results_do_not_depend_on_batching_or_subsets(syn: SequenceSplit) -> None:
    pop = Popularity().fit(syn)
    for fn in (pop.score_fn, RandomScores(5).score_fn):
        assert evaluate(fn, syn, batch_size=37, progress=False) == evaluate(fn, syn, progress=False)
    rows = np.array([3, 1, 4, 15, 9])
    by_rows = rank_users(pop.score_fn, syn, users=rows, progress=False)
    by_ids = rank_users(pop.score_fn, syn, users=syn.users[rows], progress=False)
    full = rank_users(pop.score_fn, syn, progress=False)
    assert by_rows.ranks.tolist() == by_ids.ranks.tolist() == full.ranks[rows].tolist()
    assert evaluate(pop.score_fn, syn, users=rows, progress=False)["users"] == 5


def test_bad_inputs_fail_loudly(syn: SequenceSplit) -> None:
    with pytest.raises(ValueError, match="n_items"):
        evaluate(lambda s, r, w: np.zeros((len(r), s.n_items)), syn, progress=False)
    with pytest.raises(ValueError):
        evaluate(Popularity().fit(syn).score_fn, syn, which="train", progress=False)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        evaluate(oracle, syn, users=np.array(["no-such-user"]), progress=False)
    with pytest.raises(RuntimeError):
        Popularity().score_fn(syn, np.arange(2), "test")


def test_progress_bar_path_runs(syn: SequenceSplit) -> None:
    res = evaluate(Popularity().fit(syn).score_fn, syn, batch_size=256, progress=True)
    assert res["users"] == len(syn)
