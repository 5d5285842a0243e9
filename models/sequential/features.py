"""Feature values -> model inputs: the ONE function training and serving share.

Why one function: the model is only as good as the agreement between what it saw in training and
what it gets online. Training (on historical interactions + the point-in-time LTE) and the
service (on the ``recent_items`` feature + the online LTE) both call :func:`build_inputs`, so the
sequence cut, the lag boundary, the unknown-item rule and the padding are identical by construction.

The lag boundary (leakage guard, see ``feature_store/pipelines/lte.py``)
-----------------------------------------------------------------------
An LTE valid at as-of time ``S`` summarises interactions in ``[S - lag - window, S - lag)``.
The short-term sequence given next to it keeps only interactions at or after ``S - lag``, so the
two inputs never share an event: the sequence covers ``[S - lag, now)``, the LTE everything
older. ``S`` is the as-of time of the LTE value that is actually used:

* training / offline evaluation: the snapshot the point-in-time join picks for the example's time
  (the newest snapshot at or before it; :func:`snapshot_as_of` computes it from the version's grid);
* serving: the pinned LTE version's as-of (the newest snapshot, the one the online store holds).

Passing the request time as ``lte_as_of`` instead is also leak-free (it only moves the boundary
later and shortens the sequence), but it wastes the events between the LTE's horizon and it.

``lag_seconds=None`` means "no LTE": the plain SASRec baseline keeps the last ``max_len`` items.

Per dataset (docs/results/sequential.md has the numbers):

* order-only data (Amazon; event k of a user is on synthetic day k, snapshots every day):
  ``lag = n days`` means the sequence is the last ``n`` items and the LTE everything before;
* real timestamps (MovieLens, synthetic): ``lag`` is wall-clock time, so the sequence length
  varies with how bursty a user is; a user who rated 40 movies in one evening gets all 40 as the
  sequence and an empty (zero) LTE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

PAD = 0


def lag_boundary(lte_as_of: float | None, lag_seconds: float | None) -> int | None:
    """First whole unix second the sequence may contain, or None when there is no boundary.

    Rounded *up*: timestamps are floored to seconds, so an event at second ``b`` is at or after the
    exact boundary only if ``b >= ceil(boundary)`` -- never an event the LTE may also contain.
    """
    if lag_seconds is None or lte_as_of is None:
        return None
    return math.ceil(lte_as_of - lag_seconds)


def snapshot_as_of(t: np.ndarray | float, as_of: float, every_seconds: float | None) -> np.ndarray:
    """As-of time (unix seconds) of the newest snapshot at or before ``t`` on a version's grid.

    ``build_lte`` puts snapshots at ``as_of - k * every`` (k = 0, 1, ...). Times after ``as_of``
    get ``as_of`` (the online value). Used to place the lag boundary of a training example exactly
    where the point-in-time join's snapshot ends; for a user with no row at that snapshot the join
    returns an older one (or nothing), whose horizon is older still, so the rule stays leak-free.
    """
    t = np.asarray(t, dtype=np.float64)
    if not every_seconds:
        return np.minimum(t, as_of)
    k = np.ceil(np.maximum(as_of - t, 0.0) / every_seconds - 1e-9)
    return as_of - k * every_seconds


def build_inputs(
    recent_item_ids: Sequence[str] | Sequence[int] | np.ndarray,
    recent_ts: Sequence[int] | np.ndarray,
    lte: np.ndarray | None,
    item_index: Mapping[str, int] | None,
    max_len: int,
    lte_as_of: float | None,
    lag_seconds: float | None,
    lte_dim: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Model inputs for one user: ``(item_seq int64 [max_len], lte float32 [D] or None)``.

    ``recent_item_ids`` / ``recent_ts`` (unix seconds) are the user's history before the prediction
    time, oldest first (the ``recent_items`` feature, or the training history before a target).
    Ids are looked up in ``item_index``; pass ``item_index=None`` when they are already indices.

    1. keep events at or after ``lte_as_of - lag_seconds`` (see the module doc; no cut when
       ``lag_seconds`` is None);
    2. drop items the model does not know (not in ``item_index``);
    3. keep the most recent ``max_len`` and left-pad with 0 (most recent last).

    ``lte``: the LTE vector as float32; ``None`` with ``lte_dim`` set gives zeros (the documented
    default of a user without a snapshot); ``None`` without ``lte_dim`` stays None (variant "none").
    """
    ids = np.asarray(recent_item_ids)
    ts = np.asarray(recent_ts, dtype=np.int64)
    if len(ids) != len(ts):
        raise ValueError(f"{len(ids)} item ids but {len(ts)} timestamps")
    boundary = lag_boundary(lte_as_of, lag_seconds)
    if boundary is not None:
        ids = ids[ts >= boundary]
    if item_index is None:
        idx = ids.astype(np.int64, copy=False)
        idx = idx[idx > PAD]
    else:
        idx = np.fromiter((item_index.get(str(i), PAD) for i in ids), dtype=np.int64, count=len(ids))
        idx = idx[idx != PAD]
    seq = np.zeros(max_len, dtype=np.int64)
    tail = idx[-max_len:]
    if len(tail):
        seq[max_len - len(tail) :] = tail
    if lte is None:
        vec = None if lte_dim is None else np.zeros(lte_dim, dtype=np.float32)
    else:
        vec = np.asarray(lte, dtype=np.float32)
        if lte_dim is not None and vec.shape != (lte_dim,):
            raise ValueError(f"lte has shape {vec.shape}, the model expects ({lte_dim},)")
    return seq, vec


def exclude_mask(histories: Sequence[Sequence[int] | np.ndarray], n_items: int) -> np.ndarray:
    """``[B, n_items + 1]`` bool: True for every item index in each row's history and for padding 0.

    The serving rule "never recommend what the user already has"; the evaluation protocol's seen-item
    exclusion is the same rule.
    """
    mask = np.zeros((len(histories), n_items + 1), dtype=bool)
    for row, items in enumerate(histories):
        mask[row, np.asarray(items, dtype=np.int64)] = True
    mask[:, PAD] = True
    return mask
