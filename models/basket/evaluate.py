"""Next-basket metrics, overall and split into repeat and explore items (Reality Check protocol).

Every model hands in a dense score matrix ``[n_queries, n_items + 1]`` (column 0 = padding; items
a model does not score are ``-inf``). The recommended list is the top k of that row, with the
shared harness's pessimistic tie-breaking (``models.eval.metrics.rank_of_target_sets``): nothing is
excluded, because repurchasing is the point of next-basket recommendation.

* Overall: P@k = hits / k, R@k = hits / |target|, NDCG@k binary with ideal DCG of min(|target|, k).
* Repeat (``rep_*``): only the target items the user bought before (in the input history) count as
  relevant; their positions are their positions in the same full list. Averaged over queries whose
  target has at least one repeat item. Explore (``exp_*``): the same for target items never bought
  before, averaged over queries with at least one explore item. (Reality Check: Recall_rep/expl.)
* ``rep_share@k``: share of the top k that are repeat items (the list's repeat ratio).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.basket.data import Queries
from models.eval.metrics import ndcg_at_k, precision_at_k, rank_of_target_sets, recall_at_k

KS: tuple[int, ...] = (5, 10, 20)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def basket_metrics(
    scores: np.ndarray, queries: Queries, ks: Sequence[int] = KS, overall_only: bool = False
) -> dict[str, float]:
    """Mean P/R/NDCG@k overall, for repeat and for explore target items, plus counts.

    ``overall_only`` skips the repeat/explore split and the list repeat ratio (validation checks).
    """
    if scores.shape[0] != len(queries):
        raise ValueError(f"scores has {scores.shape[0]} rows, there are {len(queries)} queries")
    repeat_t, explore_t = [], []
    for target, hist in zip(queries.targets, queries.history_items, strict=True):
        rep = np.isin(target, hist)
        repeat_t.append(target[rep])
        explore_t.append(target[~rep])
    out: dict[str, float] = {"users": float(len(queries))}
    parts = [("", list(queries.targets))]
    if not overall_only:
        parts += [("rep_", repeat_t), ("exp_", explore_t)]
    for prefix, targets in parts:
        ranks = rank_of_target_sets(scores, targets)
        for k in ks:
            out[f"{prefix}P@{k}"] = _nanmean(precision_at_k(ranks, k))
            out[f"{prefix}R@{k}"] = _nanmean(recall_at_k(ranks, k))
            out[f"{prefix}NDCG@{k}"] = _nanmean(ndcg_at_k(ranks, k))
        if prefix:
            out[f"{prefix}users"] = float(sum(len(t) > 0 for t in targets))
    if overall_only:
        return out
    out["repeat_item_share"] = float(sum(len(t) for t in repeat_t) / max(1, sum(len(t) for t in queries.targets)))
    # Repeat ratio of the recommended lists (top k by score; pessimistic ties do not matter here).
    for k in ks:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        shares = [np.isin(row, h).mean() for row, h in zip(top, queries.history_items, strict=True)]
        out[f"rep_share@{k}"] = float(np.mean(shares)) if shares else float("nan")
    return out


def dense_scores(
    candidate_ids: Sequence[np.ndarray], candidate_scores: Sequence[np.ndarray], n_items: int
) -> np.ndarray:
    """``[B, n_items + 1]`` with each candidate's score in its column and ``-inf`` elsewhere."""
    out = np.full((len(candidate_ids), n_items + 1), -np.inf, dtype=np.float32)
    for r, (ids, s) in enumerate(zip(candidate_ids, candidate_scores, strict=True)):
        out[r, ids] = s
    out[:, 0] = -np.inf
    return out
