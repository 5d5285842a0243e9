"""Full-ranking metrics on hand-computed cases: ranks, ties, exclusion, and the multi-target helpers.

Every reported number goes through these few functions, so each convention (0-based ranks,
pessimistic ties, padding never a candidate, excluded targets are misses) is pinned here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from models.eval.metrics import (
    UNRANKED,
    exclusion_mask,
    hit_rate,
    hits_at_k,
    mrr,
    ndcg,
    ndcg_at_k,
    precision_at_k,
    rank_of_target_sets,
    rank_of_targets,
    recall_at_k,
)


def test_ndcg_and_hit_rate_hand_values() -> None:
    ranks = np.array([0, 3, 9, 10, UNRANKED])
    assert ndcg(ranks, 10).tolist() == pytest.approx([1.0, 1 / math.log2(5), 1 / math.log2(11), 0.0, 0.0])
    assert hit_rate(ranks, 10).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert hit_rate(ranks, 1).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert mrr(ranks).tolist() == pytest.approx([1.0, 0.25, 0.1, 1 / 11, 0.0])
    assert mrr(ranks, k=10).tolist() == pytest.approx([1.0, 0.25, 0.1, 0.0, 0.0])


def test_rank_is_count_of_better_candidates() -> None:
    # column 0 is padding; items 1..5
    scores = np.array([[0.0, 0.9, 0.8, 0.7, 0.6, 0.5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    assert rank_of_targets(scores, np.array([1, 1])).tolist() == [0, 4]
    assert rank_of_targets(scores, np.array([4, 3])).tolist() == [3, 2]


def test_ties_are_pessimistic() -> None:
    scores = np.zeros((1, 6))  # every item ties with the target
    assert rank_of_targets(scores, np.array([1])).tolist() == [4]
    scores = np.array([[0.0, 1.0, 0.5, 0.5, 0.5, 0.0]])
    assert rank_of_targets(scores, np.array([3])).tolist() == [3]  # item 1 plus the two other 0.5s


def test_padding_column_is_never_a_candidate() -> None:
    scores = np.array([[100.0, 1.0, 0.5, 0.2]])
    assert rank_of_targets(scores, np.array([1])).tolist() == [0]
    with pytest.raises(ValueError, match="padding"):
        rank_of_targets(scores, np.array([0]))


def test_excluded_items_do_not_count_and_excluded_target_is_unranked() -> None:
    scores = np.array([[0.0, 0.9, 0.8, 0.7, 0.6], [0.0, 0.9, 0.8, 0.7, 0.6]])
    dense = np.zeros((2, 5), dtype=bool)
    dense[0, [1, 2]] = True  # row 0: two better items were seen
    dense[1, [3]] = True  # row 1: the target itself was seen
    targets = np.array([3, 3])
    expected = [0, UNRANKED]
    assert rank_of_targets(scores, targets, dense).tolist() == expected
    assert rank_of_targets(scores, targets, sp.csr_array(dense)).tolist() == expected
    assert rank_of_targets(scores, targets, sp.csr_matrix(dense)).tolist() == expected
    assert rank_of_targets(scores, targets, [np.array([1, 2]), np.array([3])]).tolist() == expected
    assert ndcg(rank_of_targets(scores, targets, dense), 10).tolist() == [1.0, 0.0]


def test_exclusion_mask_forms_agree_and_padding_is_set() -> None:
    lists = [np.array([2, 2, 4]), np.array([], dtype=np.int64)]
    m = exclusion_mask(lists, 2, 5)
    assert m.tolist() == [[True, False, True, False, True], [True, False, False, False, False]]
    only_padding = np.zeros((2, 5), dtype=bool)
    only_padding[:, 0] = True
    assert (exclusion_mask(None, 2, 5) == only_padding).all()
    with pytest.raises(ValueError):
        exclusion_mask(np.zeros((3, 5), dtype=bool), 2, 5)


def test_nan_scores_never_help() -> None:
    scores = np.array([[0.0, np.nan, 0.1, 0.2], [0.0, 0.5, np.nan, 0.2]])
    ranks = rank_of_targets(scores, np.array([1, 1]))
    assert ranks.tolist() == [2, 0]  # NaN target falls behind everything; NaN rivals do not beat it


def test_float32_scores_and_broadcast_views_are_accepted() -> None:
    base = np.array([0.0, 3.0, 2.0, 1.0], dtype=np.float32)
    view = np.broadcast_to(base, (3, 4))  # read-only, as the popularity baseline returns
    assert rank_of_targets(view, np.array([1, 2, 3])).tolist() == [0, 1, 2]


# --- several targets per row -----------------------------------------------------------------------


def test_target_sets_hand_case() -> None:
    # items 1..6 ranked by score: 1 (0.9), 2 (0.8), 3 (0.7), 4 (0.6), 5 (0.5), 6 (0.4)
    scores = np.array([[0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    ranks = rank_of_target_sets(scores, [np.array([5, 2, 2])])  # duplicates collapse
    assert [r.tolist() for r in ranks] == [[1, 4]]  # aligned with np.unique -> items [2, 5]
    k = 3
    assert hits_at_k(ranks, k).tolist() == [1]
    assert precision_at_k(ranks, k).tolist() == pytest.approx([1 / 3])
    assert recall_at_k(ranks, k).tolist() == pytest.approx([1 / 2])
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranks, k).tolist() == pytest.approx([(1 / math.log2(3)) / ideal])
    assert ndcg_at_k(ranks, 10).tolist() == pytest.approx([(1 / math.log2(3) + 1 / math.log2(6)) / ideal])


def test_target_sets_ties_and_exclusion() -> None:
    scores = np.array([[0.0, 0.5, 0.5, 0.5, 0.5]])
    # Targets 1 and 2 tie with non-targets 3 and 4: both non-targets go first, targets take 2 and 3.
    ranks = rank_of_target_sets(scores, [np.array([1, 2])])
    assert sorted(ranks[0].tolist()) == [2, 3]
    # An excluded target is unreachable, takes no position, and still counts in recall's denominator.
    ranks = rank_of_target_sets(scores, [np.array([1, 2])], [np.array([1, 3])])
    assert ranks[0].tolist() == [UNRANKED, 1]
    assert recall_at_k(ranks, 2).tolist() == [0.5]


def test_target_sets_match_single_target_ranks() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(40, 30)).astype(np.float64)  # many ties on purpose
    targets = rng.integers(1, 30, size=40)
    exclude = rng.random((40, 30)) < 0.2
    single = rank_of_targets(scores, targets, exclude)
    multi = rank_of_target_sets(scores, [np.array([t]) for t in targets], exclude)
    assert np.concatenate(multi).tolist() == single.tolist()
    assert np.allclose(ndcg_at_k(multi, 10), ndcg(single, 10))
    assert np.allclose(recall_at_k(multi, 10), hit_rate(single, 10))


def test_target_sets_empty_rows_are_nan() -> None:
    scores = np.array([[0.0, 0.3, 0.2], [0.0, 0.1, 0.2]])
    ranks = rank_of_target_sets(scores, [np.array([2]), np.array([], dtype=np.int64)])
    assert ranks[1].size == 0
    for fn in (precision_at_k, recall_at_k, ndcg_at_k):
        out = fn(ranks, 1)
        assert not np.isnan(out[0]) and np.isnan(out[1])
