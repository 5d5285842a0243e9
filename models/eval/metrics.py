"""Full-ranking metrics: target ranks under exclusion, HR/NDCG for one target, P/R/NDCG for target sets.

Conventions (docs/evaluation.md is the reference text):

* Scores cover the whole catalogue: shape ``(B, n_items + 1)``, column ``j`` scores item index ``j``.
  Column 0 is padding and is always excluded, whatever the model put there.
* A rank is 0-based: rank 0 is the top of the list. It counts the *non-excluded* items that would be
  listed before the target.
* Ties are broken **pessimistically**: every other candidate whose score equals the target's is
  placed before it. A model that outputs a constant (or a collapsed embedding that gives many
  items the same score) must not get credit for the luck of an index order; optimistic or
  index-order tie-breaking silently inflates such models, pessimistic never does.
* NaN scores are treated as ``-inf``: a NaN target falls behind every candidate (a miss, never a
  lucky hit).
* A target that is itself excluded cannot be ranked; its rank is :data:`UNRANKED`, which is a miss
  at every k. Whether that happens (repeat consumption of a seen item) is the caller's business;
  the harness reports how often.

Per-row metric functions return one value per row (float64) so callers can average, bootstrap or
run paired tests on the same users; ``evaluate`` in ``harness.py`` reports the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

UNRANKED = np.iinfo(np.int64).max  # rank of a target that is excluded from the candidates
# Upper bound on elements of one temporary (rows x catalogue) array in the set-ranking code.
_CHUNK_ELEMENTS = 1 << 24

ExcludeLike = np.ndarray | sp.spmatrix | sp.sparray | Sequence[np.ndarray] | None


def exclusion_mask(exclude: ExcludeLike, n_rows: int, n_cols: int) -> np.ndarray:
    """A fresh dense bool mask ``(n_rows, n_cols)``, True = not a candidate; column 0 always True.

    ``exclude`` may be a dense bool array, a scipy sparse matrix/array (non-zero = excluded), a
    sequence of per-row item-index arrays, or None (only padding excluded).
    """
    if exclude is None:
        mask = np.zeros((n_rows, n_cols), dtype=bool)
    elif isinstance(exclude, np.ndarray) and exclude.ndim == 2:
        if exclude.shape != (n_rows, n_cols):
            raise ValueError(f"exclude has shape {exclude.shape}, scores have {(n_rows, n_cols)}")
        mask = exclude.astype(bool, copy=True)
    elif sp.issparse(exclude):
        if exclude.shape != (n_rows, n_cols):
            raise ValueError(f"exclude has shape {exclude.shape}, scores have {(n_rows, n_cols)}")
        csr = sp.csr_array(exclude)
        mask = np.zeros((n_rows, n_cols), dtype=bool)
        rows = np.repeat(np.arange(n_rows), np.diff(csr.indptr))
        nz = csr.data != 0
        mask[rows[nz], csr.indices[nz]] = True
    else:
        lists = list(exclude)  # type: ignore[arg-type]
        if len(lists) != n_rows:
            raise ValueError(f"exclude has {len(lists)} rows, scores have {n_rows}")
        mask = np.zeros((n_rows, n_cols), dtype=bool)
        lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=n_rows)
        if lens.sum():
            cols = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
            if cols.min() < 0 or cols.max() >= n_cols:
                raise ValueError(f"exclude holds item indices outside [0, {n_cols})")
            mask[np.repeat(np.arange(n_rows), lens), cols] = True
    mask[:, 0] = True
    return mask


def _clean_scores(scores: Any) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-d (rows, n_items + 1), got shape {scores.shape}")
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    return scores


def _check_targets(targets: np.ndarray, n_cols: int) -> None:
    if len(targets) and (targets.min() < 1 or targets.max() >= n_cols):
        raise ValueError(f"targets must be item indices in [1, {n_cols - 1}] (0 is padding)")


def rank_of_targets(scores: np.ndarray, targets: np.ndarray, exclude: ExcludeLike = None) -> np.ndarray:
    """0-based rank of each row's single target among the non-excluded items (int64).

    rank = number of *other* candidates with ``score >= score(target)`` (pessimistic ties).
    Excluded targets get :data:`UNRANKED`.
    """
    scores = _clean_scores(scores)
    n_rows, n_cols = scores.shape
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (n_rows,):
        raise ValueError(f"targets must have shape ({n_rows},), got {targets.shape}")
    _check_targets(targets, n_cols)
    mask = exclusion_mask(exclude, n_rows, n_cols)
    arange = np.arange(n_rows)
    target_excluded = mask[arange, targets]
    t = scores[arange, targets]
    ge = scores >= t[:, None]
    np.logical_and(ge, np.logical_not(mask, out=mask), out=ge)
    ranks = np.count_nonzero(ge, axis=1).astype(np.int64) - 1  # minus the target itself
    ranks[target_excluded] = UNRANKED
    return ranks


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per row: 1.0 if the single target is in the top k, else 0.0."""
    return (np.asarray(ranks) < k).astype(np.float64)


def _discount(ranks: np.ndarray, k: int) -> np.ndarray:
    """1/log2(rank + 2) for ranks below k, else 0 (computed on clipped ranks: no overflow)."""
    r = np.asarray(ranks)
    safe = np.minimum(r, k).astype(np.float64)
    return np.where(r < k, 1.0 / np.log2(safe + 2.0), 0.0)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per row NDCG@k for one relevant item: 1/log2(rank + 2) if rank < k, else 0 (the ideal DCG is 1)."""
    return _discount(ranks, k)


def mrr(ranks: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per row reciprocal rank 1/(rank + 1), cut to 0 beyond k when k is given."""
    r = np.asarray(ranks)
    hit = r < (UNRANKED if k is None else k)
    safe = np.where(hit, r, 0).astype(np.float64)
    return np.where(hit, 1.0 / (safe + 1.0), 0.0)


# --- several targets per row (next-basket, repeat/explore splits) ---------------------------------


def rank_of_target_sets(
    scores: np.ndarray, targets: Sequence[np.ndarray], exclude: ExcludeLike = None
) -> list[np.ndarray]:
    """0-based list positions of every target of every row (pessimistic ties), one array per row.

    Each row's targets are deduplicated and sorted (``np.unique``); the returned array is aligned
    with that order. The position of a target is the number of non-target candidates with a score
    ``>=`` its own, plus the number of the row's other (non-excluded) targets listed before it. Tied
    targets take consecutive positions in some order, which changes neither hits nor DCG. Excluded
    targets get :data:`UNRANKED` and take no position. For one target per row this equals
    :func:`rank_of_targets`.
    """
    scores = _clean_scores(scores)
    n_rows, n_cols = scores.shape
    if len(targets) != n_rows:
        raise ValueError(f"targets has {len(targets)} rows, scores have {n_rows}")
    sets = [np.unique(np.asarray(t, dtype=np.int64)) for t in targets]
    lens = np.fromiter((len(s) for s in sets), dtype=np.int64, count=n_rows)
    if lens.sum() == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(n_rows)]
    items = np.concatenate(sets)
    _check_targets(items, n_cols)
    rows = np.repeat(np.arange(n_rows), lens)
    mask = exclusion_mask(exclude, n_rows, n_cols)
    reachable = ~mask[rows, items]
    s = scores[rows, items]
    others = mask  # candidates that are neither excluded nor a target of the row
    others[rows, items] = True
    np.logical_not(others, out=others)

    positions = np.full(len(items), UNRANKED, dtype=np.int64)
    idx = np.flatnonzero(reachable)
    # Non-target candidates ranked at or above each target, in chunks to bound memory.
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    ahead = np.empty(len(idx), dtype=np.int64)
    for lo in range(0, len(idx), step):
        sel = idx[lo : lo + step]
        r = rows[sel]
        ge = scores[r] >= s[sel, None]
        ge &= others[r]
        ahead[lo : lo + step] = np.count_nonzero(ge, axis=1)
    # Order of reachable targets inside their row by descending score.
    order = np.lexsort((-s[idx], rows[idx]))
    sorted_rows = rows[idx][order]
    first = np.searchsorted(sorted_rows, sorted_rows, side="left")
    within = np.empty(len(idx), dtype=np.int64)
    within[order] = np.arange(len(idx)) - first
    positions[idx] = ahead + within
    return np.split(positions, np.cumsum(lens)[:-1])


def _flatten(set_ranks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lens = np.fromiter((len(r) for r in set_ranks), dtype=np.int64, count=len(set_ranks))
    flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in set_ranks]) if lens.sum() else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(set_ranks)), lens)
    return flat, rows, lens


def hits_at_k(set_ranks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per row: number of targets in the top k (int64)."""
    flat, rows, lens = _flatten(set_ranks)
    return np.bincount(rows[flat < k], minlength=len(lens)).astype(np.int64)


def precision_at_k(set_ranks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per row hits@k / k; NaN for rows without targets (they should not be evaluated)."""
    _, _, lens = _flatten(set_ranks)
    out = hits_at_k(set_ranks, k) / float(k)
    return np.where(lens > 0, out, np.nan)


def recall_at_k(set_ranks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per row hits@k / number of targets (unreachable targets count in the denominator); NaN if none."""
    _, _, lens = _flatten(set_ranks)
    hits = hits_at_k(set_ranks, k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lens > 0, hits / np.maximum(lens, 1), np.nan)


def ndcg_at_k(set_ranks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per row binary NDCG@k: DCG of the hits / DCG of min(#targets, k) hits at the top; NaN if none."""
    flat, rows, lens = _flatten(set_ranks)
    dcg = np.bincount(rows, weights=_discount(flat, k), minlength=len(lens))
    ideal_table = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    idcg = ideal_table[np.minimum(lens, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lens > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)
