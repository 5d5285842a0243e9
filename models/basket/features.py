"""Purchase history -> CASE inputs: the ONE module training, offline evaluation and serving share.

Why one module: CASE reads *calendar time*. A one-day shift between how training built the
purchase-day matrix and how the service builds it would silently move every purchase into the
wrong bin of the temporal convolutions. Training (:mod:`models.basket.train`), evaluation
(:mod:`models.basket.experiment`) and the service all call :func:`build_from_indices` (directly
or through :func:`build_user_inputs`), so the cut-off day, the column order, the candidate rule
and the padding are identical by construction.

Day numbers
-----------
A day number is an integer count of UTC days since 1970-01-01 (:func:`day_number`). Order-only
datasets (Ta-Feng) carry the synthetic day index of ``feature_store/sources/schema.py`` (basket k
of a user is day ``DAY_INDEX_EPOCH + k``), so there the horizon and every cadence are in *basket
steps*, not days.

The purchase-day matrix (``[n_candidates, horizon]`` float32, binary)
--------------------------------------------------------------------
For an as-of day ``A`` (the day the next basket is predicted for) column ``j`` is the day
``A - horizon + j``. The **last column (j = horizon - 1) is the day ``A - 1``**, the day before
the as-of day; the first column is ``A - horizon``. A cell is 1 when the user bought the item on
that day. Purchases on day ``A`` or later are never used: they are the basket being predicted (or
later). Purchases older than ``A - horizon`` fall outside the window (all-zero row if an item has
nothing newer), but the item can still be a candidate.

As days pass without a purchase, the same history shifts one column to the left per day: that is
how a served ranking changes between ``as_of`` and ``as_of + n`` with no new data.

Candidates (the rows)
---------------------
1. **Repeat candidates**: every item the user bought before ``A``, most recent last purchase first
   (ties: more purchase days first, then lower item index), capped at ``max_items`` (1,024): the
   user's 1,024 most recently bought items.
2. **Explore candidates**: the first ``n_explore`` items of ``explore_items`` -- a list ordered by
   training popularity (most bought first), stored with the model -- that are not repeat
   candidates. Their rows are all zero (never bought in the window); the model scores them from
   the item embedding and the user's set representation. ``n_explore`` is a per-dataset setting
   (``params.json``): on a small catalogue (Groceries, 167 items) it covers every item, so the
   ranking is over the full catalogue; on a large one (Ta-Feng, 12k items) it bounds the cost.

Item ids the model's ``item_index`` does not know have no embedding and are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

HORIZON_DAYS = 364
MAX_ITEMS = 1024
PAD = 0
_EPOCH = np.datetime64("1970-01-01", "D")

CANDIDATE_RULE = (
    "repeat: items bought before the as-of day, most recent last purchase first (ties: more purchase "
    "days, then lower index), at most max_items; then explore: the first n_explore items of the model's "
    "popularity-ordered explore_items list that are not repeat candidates (all-zero rows). Matrix column j "
    "is day as_of - horizon + j; the last column is as_of - 1; purchases on or after as_of are ignored."
)


def day_number(ts: pd.Timestamp | np.datetime64 | str | pd.Series | np.ndarray) -> np.ndarray | int:
    """UTC day number (days since 1970-01-01) of a timestamp, or of each element of a series/array."""
    if isinstance(ts, pd.Series | np.ndarray | pd.DatetimeIndex):
        t = pd.to_datetime(pd.Series(np.asarray(ts)) if not isinstance(ts, pd.Series) else ts, utc=True)
        days = t.dt.tz_convert(None).to_numpy().astype("datetime64[D]")
        return (days - _EPOCH).astype(np.int64)
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int((np.datetime64(t.tz_convert(None).to_datetime64(), "D") - _EPOCH).astype(np.int64))


@dataclass
class UserInputs:
    """One user's model inputs; rows are candidates in the order of the candidate rule."""

    purchase_days: np.ndarray  # float32 [n, horizon], binary
    item_ids: np.ndarray  # int64 [n], model item index (never 0 for a real row)
    item_mask: np.ndarray  # float32 [n], all ones (padding appears only in a batch)
    n_repeat: int  # the first n_repeat rows are repeat candidates, the rest explore

    def __len__(self) -> int:
        return len(self.item_ids)


def repeat_candidates(item_idx: np.ndarray, days: np.ndarray, as_of_day: int, max_items: int = MAX_ITEMS) -> np.ndarray:
    """Item indices bought before ``as_of_day``, most recent last purchase first, at most ``max_items``."""
    item_idx = np.asarray(item_idx, dtype=np.int64)
    days = np.asarray(days, dtype=np.int64)
    before = (days < as_of_day) & (item_idx != PAD)
    if not before.any():
        return np.zeros(0, dtype=np.int64)
    items, days = item_idx[before], days[before]
    uniq, inverse = np.unique(items, return_inverse=True)
    last = np.full(len(uniq), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, inverse, days)
    # Purchase *days* (several lines of one item on one day are quantity, not extra purchases).
    day_pairs = np.unique(np.stack([inverse, days], axis=1), axis=0)
    n_days = np.bincount(day_pairs[:, 0], minlength=len(uniq))
    order = np.lexsort((uniq, -n_days, -last))
    return uniq[order[:max_items]]


def purchase_day_matrix(
    candidates: np.ndarray,
    item_idx: np.ndarray,
    days: np.ndarray,
    as_of_day: int,
    horizon: int = HORIZON_DAYS,
) -> np.ndarray:
    """Binary ``[len(candidates), horizon]``; column j is day ``as_of_day - horizon + j`` (last = as_of - 1)."""
    out = np.zeros((len(candidates), horizon), dtype=np.float32)
    if len(candidates) == 0 or len(item_idx) == 0:
        return out
    item_idx = np.asarray(item_idx, dtype=np.int64)
    col = np.asarray(days, dtype=np.int64) - (as_of_day - horizon)
    in_window = (col >= 0) & (col < horizon)
    # Row of each history line: position of its item among the candidates (-1 = not a candidate).
    lookup = {int(c): r for r, c in enumerate(candidates.tolist())}
    rows = np.fromiter((lookup.get(int(i), -1) for i in item_idx), dtype=np.int64, count=len(item_idx))
    keep = in_window & (rows >= 0)
    out[rows[keep], col[keep]] = 1.0
    return out


def build_from_indices(
    item_idx: np.ndarray,
    days: np.ndarray,
    as_of_day: int,
    max_items: int = MAX_ITEMS,
    explore_items: np.ndarray | None = None,
    n_explore: int = 0,
    horizon: int = HORIZON_DAYS,
) -> UserInputs:
    """CASE inputs from a history given as item indices and day numbers (see the module docstring)."""
    repeat = repeat_candidates(item_idx, days, as_of_day, max_items)
    explore = np.zeros(0, dtype=np.int64)
    if n_explore > 0 and explore_items is not None and len(explore_items):
        pool = np.asarray(explore_items, dtype=np.int64)
        pool = pool[(pool != PAD) & ~np.isin(pool, repeat)]
        explore = pool[:n_explore]
    candidates = np.concatenate([repeat, explore])
    matrix = purchase_day_matrix(repeat, item_idx, days, as_of_day, horizon)
    if len(explore):
        matrix = np.concatenate([matrix, np.zeros((len(explore), horizon), dtype=np.float32)])
    return UserInputs(
        purchase_days=matrix,
        item_ids=candidates.astype(np.int64),
        item_mask=np.ones(len(candidates), dtype=np.float32),
        n_repeat=len(repeat),
    )


def _history_arrays(history: Iterable[tuple[str, int]] | pd.DataFrame) -> tuple[list[str], np.ndarray]:
    if isinstance(history, pd.DataFrame):
        if "day" in history.columns:
            days = history["day"].to_numpy(dtype=np.int64)
        else:
            days = np.asarray(day_number(history["timestamp"]), dtype=np.int64)
        return history["item_id"].astype(str).tolist(), days
    pairs = list(history)
    return [str(i) for i, _ in pairs], np.array([int(d) for _, d in pairs], dtype=np.int64)


def index_of(item_index: Sequence[str] | Mapping[str, int]) -> Mapping[str, int]:
    """``{item_id: index}`` from an ``item_index.json`` list (index 0 = "" padding) or a ready mapping."""
    if isinstance(item_index, Mapping):
        return item_index
    return {str(item): i for i, item in enumerate(item_index) if i != PAD}


def build_user_inputs(
    history: Iterable[tuple[str, int]] | pd.DataFrame,
    as_of_day: int,
    item_index: Sequence[str] | Mapping[str, int],
    max_items: int = MAX_ITEMS,
    explore_items: Sequence[str] = (),
    n_explore: int = 0,
    horizon: int = HORIZON_DAYS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """One user's ``(purchase_days [n, horizon] f32, item_ids [n] i64, item_mask [n] f32, candidate_item_ids)``.

    ``history``: ``(item_id, day_number)`` pairs, or a frame with ``item_id`` and ``day`` (or
    ``timestamp``) columns. ``item_index``: the artifact's ``item_index.json`` list or a mapping.
    ``explore_items`` / ``n_explore``: the artifact's popularity list and count (``params.json``).
    """
    mapping = index_of(item_index)
    explore = np.array([mapping.get(str(i), PAD) for i in explore_items], dtype=np.int64)
    return _build_one(history, as_of_day, mapping, _names(item_index), max_items, explore, n_explore, horizon)


def _build_one(
    history: Iterable[tuple[str, int]] | pd.DataFrame,
    as_of_day: int,
    mapping: Mapping[str, int],
    names: Mapping[int, str] | Sequence[str],
    max_items: int,
    explore: np.ndarray,
    n_explore: int,
    horizon: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    items, days = _history_arrays(history)
    idx = np.fromiter((mapping.get(i, PAD) for i in items), dtype=np.int64, count=len(items))
    inputs = build_from_indices(idx, days, int(as_of_day), max_items, explore, n_explore, horizon)
    candidate_ids = [names[int(i)] for i in inputs.item_ids]
    return inputs.purchase_days, inputs.item_ids, inputs.item_mask, candidate_ids


def _names(item_index: Sequence[str] | Mapping[str, int]) -> Mapping[int, str] | Sequence[str]:
    if isinstance(item_index, Mapping):
        return {i: item for item, i in item_index.items()}
    return item_index


def pad_batch(
    users: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray] | UserInputs], min_candidates: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack users into ``(purchase_days [B, N, H], item_ids [B, N], item_mask [B, N])``, padded to the longest.

    Padding rows have item id 0, mask 0 and an all-zero matrix; the model gives them a very low score.
    """
    parts = [(u.purchase_days, u.item_ids, u.item_mask) if isinstance(u, UserInputs) else u for u in users]
    if not parts:
        raise ValueError("pad_batch needs at least one user")
    horizon = parts[0][0].shape[1]
    n = max(min_candidates, max(len(p[1]) for p in parts))
    days = np.zeros((len(parts), n, horizon), dtype=np.float32)
    ids = np.zeros((len(parts), n), dtype=np.int64)
    mask = np.zeros((len(parts), n), dtype=np.float32)
    for b, (m, i, k) in enumerate(parts):
        days[b, : len(i)] = m
        ids[b, : len(i)] = i
        mask[b, : len(i)] = k
    return days, ids, mask


def build_batch_inputs(
    histories: Sequence[Iterable[tuple[str, int]] | pd.DataFrame],
    as_of_days: Sequence[int] | int,
    item_index: Sequence[str] | Mapping[str, int],
    max_items: int = MAX_ITEMS,
    explore_items: Sequence[str] = (),
    n_explore: int = 0,
    horizon: int = HORIZON_DAYS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
    """:func:`build_user_inputs` for several users, padded into one batch (plus each user's candidate ids)."""
    mapping = index_of(item_index)
    names = _names(item_index)
    explore = np.array([mapping.get(str(i), PAD) for i in explore_items], dtype=np.int64)
    as_of = [as_of_days] * len(histories) if isinstance(as_of_days, int) else list(as_of_days)
    users, candidate_ids = [], []
    for history, day in zip(histories, as_of, strict=True):
        m, i, k, c = _build_one(history, day, mapping, names, max_items, explore, n_explore, horizon)
        users.append((m, i, k))
        candidate_ids.append(c)
    days, ids, mask = pad_batch(users)
    return days, ids, mask, candidate_ids
