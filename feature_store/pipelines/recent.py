"""The user's recent-items feature and per-item features, as point-in-time snapshots.

Recent items are the short-term sequence a model reads next to the LTE: at as-of time ``T``
they are the user's last ``max_len`` interactions strictly before ``T`` (an event at exactly
``T`` is not yet known at ``T``). With an LTE lag, the model uses the part in
``[T - lag, T)``; the LTE covers what is older, so the two never overlap.

Item features at ``T`` are the item's creator, its popularity so far (interactions strictly
before ``T``) and optionally its basis vector.

Both computations are vectorised: events are sorted once, each snapshot is found with
``searchsorted``, and per-user/per-item counts are updated incrementally with ``bincount``
between consecutive snapshots, so the total cost is O(events + snapshots x users) plus
building the list columns.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import numpy as np
import pandas as pd

from feature_store.pipelines.basis import SemanticBasis
from feature_store.pipelines.lte import as_of_us, timestamps_us, track, us_to_utc

RECENT_COLUMNS = ("user_id", "event_timestamp", "created_timestamp", "item_ids", "timestamps")
ITEM_FEATURE_COLUMNS = ("item_id", "event_timestamp", "created_timestamp", "creator_id", "popularity")
_US_PER_S = 1_000_000


def _empty_recent() -> pd.DataFrame:
    ts = us_to_utc(np.zeros(0, dtype=np.int64))
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=object),
            "event_timestamp": ts,
            "created_timestamp": ts.copy(),
            "item_ids": pd.Series([], dtype=object),
            "timestamps": pd.Series([], dtype=object),
        }
    )


def split_lists(values: np.ndarray, lengths: np.ndarray) -> list[list]:
    """Cut ``values`` into consecutive Python lists of the given lengths."""
    # One tolist() and C-level list slicing: far cheaper than a numpy split into many small arrays.
    # The cyclic GC is paused meanwhile: hundreds of thousands of fresh lists would otherwise trigger
    # repeated full collections that cost ~10x the slicing itself (none of these objects form cycles).
    flat = values.tolist()
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [flat[a:b] for a, b in zip(starts, ends, strict=True)]
    finally:
        if was_enabled:
            gc.enable()


def compute_recent_items(
    interactions: pd.DataFrame,
    as_of: Sequence[pd.Timestamp],
    max_len: int = 50,
    show_progress: bool = True,
) -> pd.DataFrame:
    """The last ``max_len`` items of each user strictly before each as-of time, most recent last.

    One row per ``(user, T)`` where the user has at least one interaction before ``T``; columns
    :data:`RECENT_COLUMNS`: ``item_ids`` (list[str]) and ``timestamps`` (list[int], unix
    seconds, floored) are aligned, oldest first. Events with equal timestamps keep their input
    order (stable sort), so the sequence is reproducible. ``event_timestamp`` and
    ``created_timestamp`` are ``T``.

    Cost: one stable sort by (user, time), then per snapshot an incremental per-user count of
    the events before ``T``: within a user's time-sorted block those are a prefix, so the
    recent window is the slice ``[prefix_end - max_len, prefix_end)`` of the block.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    times = as_of_us(as_of)
    if len(interactions) == 0 or len(times) == 0:
        return _empty_recent()
    user_codes, user_ids = pd.factorize(interactions["user_id"].astype(str), sort=False)
    item_codes, item_ids = pd.factorize(interactions["item_id"].astype(str), sort=False)
    ts = timestamps_us(interactions["timestamp"])
    n_users = len(user_ids)
    user_arr = np.asarray(user_ids, dtype=object)
    item_arr = np.asarray(item_ids, dtype=object)

    # Per-user blocks sorted by time (lexsort is stable: ties keep input order).
    by_user = np.lexsort((ts, user_codes))
    u_item = item_codes[by_user]
    u_ts = ts[by_user]
    block_start = np.concatenate([[0], np.cumsum(np.bincount(user_codes, minlength=n_users))[:-1]])
    # Global time order, to count per user the events before each T incrementally.
    by_time = np.argsort(ts, kind="stable")
    t_sorted = ts[by_time]
    t_user = user_codes[by_time]

    before = np.zeros(n_users, dtype=np.int64)
    done = 0
    users_parts, t_parts, len_parts, idx_parts = [], [], [], []
    for t_us in track(times, len(times), "recent items snapshots", show_progress):
        hi = int(np.searchsorted(t_sorted, t_us, side="left"))  # events strictly before T
        if hi > done:
            before += np.bincount(t_user[done:hi], minlength=n_users)
            done = hi
        users = np.flatnonzero(before)
        if not len(users):
            continue
        end = block_start[users] + before[users]
        start = np.maximum(block_start[users], end - max_len)
        lengths = end - start
        # Concatenated ranges [start, end) without a Python loop.
        offsets = np.cumsum(lengths) - lengths
        idx = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths) + np.repeat(start, lengths)
        users_parts.append(users)
        t_parts.append(np.full(len(users), t_us, dtype=np.int64))
        len_parts.append(lengths)
        idx_parts.append(idx)
    if not users_parts:
        return _empty_recent()
    users = np.concatenate(users_parts)
    lengths = np.concatenate(len_parts)
    idx = np.concatenate(idx_parts)
    event_ts = us_to_utc(np.concatenate(t_parts))
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(user_arr[users], dtype=object),
            "event_timestamp": event_ts,
            "created_timestamp": event_ts.copy(),
            "item_ids": pd.Series(split_lists(item_arr[u_item[idx]], lengths), dtype=object),
            "timestamps": pd.Series(split_lists(u_ts[idx] // _US_PER_S, lengths), dtype=object),
        }
    )
    frame = frame.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)
    return frame[list(RECENT_COLUMNS)]


def compute_item_features(
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    basis: SemanticBasis | None,
    as_of: Sequence[pd.Timestamp],
    show_progress: bool = True,
) -> pd.DataFrame:
    """Per-item features at each as-of time: creator, popularity so far, optional content vector.

    One row per (item in ``items``, ``T``); columns :data:`ITEM_FEATURE_COLUMNS` plus
    ``content`` when a basis is given:

    * ``creator_id`` (str): ``""`` when the item has none, so the column never holds nulls;
    * ``popularity`` (int64): the number of interactions with the item strictly before ``T``
      (all-time count, so it is monotone in ``T``; interactions with items missing from
      ``items`` are ignored);
    * ``content`` (float32 array of length d): the item's basis vector, zeros for items outside
      the basis -- the same value at every ``T`` (the basis is fixed for a version).

    Every item gets a row at every ``T`` (popularity 0 included), because "never consumed" is
    itself a feature for cold items.
    """
    times = as_of_us(as_of)
    item_ids = items["item_id"].astype(str).to_numpy(dtype=object)
    n_items = len(item_ids)
    if "creator_id" in items.columns:
        creators = items["creator_id"].map(lambda v: "" if v is None or pd.isna(v) else str(v)).to_numpy(dtype=object)
    else:
        creators = np.full(n_items, "", dtype=object)

    codes = pd.Index(item_ids).get_indexer(interactions["item_id"].astype(str))
    ts = timestamps_us(interactions["timestamp"])
    keep = codes >= 0
    codes, ts = codes[keep], ts[keep]
    order = np.argsort(ts, kind="stable")
    codes, ts = codes[order], ts[order]

    counts = np.zeros(n_items, dtype=np.int64)
    done = 0
    pop_parts = []
    for t_us in track(times, len(times), "item feature snapshots", show_progress):
        hi = int(np.searchsorted(ts, t_us, side="left"))
        if hi > done:
            counts += np.bincount(codes[done:hi], minlength=n_items)
            done = hi
        pop_parts.append(counts.copy())

    n_t = len(times)
    event_ts = us_to_utc(np.repeat(times, n_items))
    frame = pd.DataFrame(
        {
            "item_id": pd.Series(np.tile(item_ids, n_t), dtype=object),
            "event_timestamp": event_ts,
            "created_timestamp": event_ts.copy(),
            "creator_id": pd.Series(np.tile(creators, n_t), dtype=object),
            "popularity": pd.Series(
                np.concatenate(pop_parts) if pop_parts else np.zeros(0, dtype=np.int64), dtype=np.int64
            ),
        }
    )
    if basis is not None:
        vectors = list(basis.lookup(item_ids))  # one float32 row view per item, shared across snapshots
        frame["content"] = pd.Series(vectors * n_t, dtype=object)
    return frame
