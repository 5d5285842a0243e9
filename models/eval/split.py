"""Leave-one-out split of canonical interactions into per-user item-index sequences.

Protocol (docs/evaluation.md is the reference text):

* Each user's events are ordered by ``(timestamp, original row order)`` with a *stable* sort, so
  events with equal timestamps (MovieLens rates many movies in the same second; order-only data
  has one event per synthetic day) keep the order the adapter produced. Without a stable rule the
  identity of the test item would change from run to run and so would every number.
* The last event of a user is the test target, the second-to-last the validation target; the
  rest is the training part. The validation input is the training part, the test input is the
  training part plus the validation target (the model may see it at test time, it is history).
* Users with fewer than ``min_len`` events are dropped: with fewer than 3 events there is no
  training event left once both targets are removed, and such users would only measure the
  fallback behaviour of a model. The number of dropped users is kept in ``SequenceSplit.dropped_users``.
* The item index is built from *all* interactions, including those of dropped users: the
  catalogue is every item that occurs in the data. Items that only ever occur as a valid/test
  target are part of it too (a model cannot learn them, and full ranking must still rank them
  so that a model is not credited for a smaller candidate set).
* Index 0 is padding (item id ``""``); real items are ``1..n_items``, assigned in sorted order of
  their string ids, so the index does not depend on row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Which = Literal["valid", "test"]
PAD_ID = ""
PAD_INDEX = 0


@dataclass
class SequenceSplit:
    """Per-user chronological item-index sequences plus the leave-one-out view on them.

    ``sequences[i]`` is the *full* sequence of user ``users[i]``; the split is a view (slices),
    so training code, the harness and feature builders all agree on the same cut points.
    """

    dataset: str
    item_ids: np.ndarray  # index -> item_id string; index 0 is padding ("")
    item_index: dict[str, int]
    users: np.ndarray  # user ids (str), one per row
    sequences: list[np.ndarray]  # per user, full chronological item-index sequence (int64)
    timestamps: list[np.ndarray]  # per user, int64 unix seconds aligned with sequences
    dropped_users: int = 0  # users removed by the min_len filter
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.sequences) != len(self.users) or len(self.timestamps) != len(self.users):
            raise ValueError("users, sequences and timestamps must have one entry per user")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of real items; score arrays have ``n_items + 1`` columns (column 0 is padding)."""
        return len(self.item_ids) - 1

    @property
    def n_users(self) -> int:
        return len(self.users)

    # --- the leave-one-out view -------------------------------------------------------------
    def train_part(self, i: int) -> np.ndarray:
        """Events a model may be fitted on: everything before the validation target."""
        return self.sequences[i][:-2]

    def valid_input(self, i: int) -> np.ndarray:
        return self.sequences[i][:-2]

    def valid_target(self, i: int) -> int:
        return int(self.sequences[i][-2])

    def test_input(self, i: int) -> np.ndarray:
        """Training part plus the validation target: at test time the latter is plain history."""
        return self.sequences[i][:-1]

    def test_target(self, i: int) -> int:
        return int(self.sequences[i][-1])

    def input(self, i: int, which: Which) -> np.ndarray:
        """``valid_input`` or ``test_input``, chosen by ``which``."""
        return self.valid_input(i) if check_which(which) == "valid" else self.test_input(i)

    def target(self, i: int, which: Which) -> int:
        return self.valid_target(i) if check_which(which) == "valid" else self.test_target(i)

    def targets(self, rows: np.ndarray, which: Which) -> np.ndarray:
        """Targets of many rows at once (int64)."""
        pos = -2 if check_which(which) == "valid" else -1
        return np.fromiter((self.sequences[i][pos] for i in rows), dtype=np.int64, count=len(rows))

    def target_time(self, i: int, which: Which) -> int:
        """Unix seconds of the target event: the cut-off for point-in-time features of that query."""
        pos = -2 if check_which(which) == "valid" else -1
        return int(self.timestamps[i][pos])

    def train_sequences(self) -> list[np.ndarray]:
        """All training parts (views, not copies), in row order."""
        return [s[:-2] for s in self.sequences]


def check_which(which: str) -> str:
    if which not in ("valid", "test"):
        raise ValueError(f"which must be 'valid' or 'test', got {which!r}")
    return which


def _to_unix_microseconds(ts: pd.Series) -> np.ndarray:
    """Any timestamp column as int64 microseconds since the epoch (UTC)."""
    t = pd.to_datetime(ts, utc=True)
    return t.dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)


def leave_one_out(
    interactions: pd.DataFrame,
    dataset: str,
    min_len: int = 3,
    dedupe_consecutive: bool = False,
) -> SequenceSplit:
    """Build the leave-one-out split of canonical interactions (``user_id, item_id, timestamp``).

    ``dedupe_consecutive`` collapses immediate repeats of the same item within a user (A A B -> A B)
    before the ``min_len`` filter; useful for click logs where reloads repeat an event, off by
    default because for ratings/purchases a repeat is a real event.
    """
    if min_len < 3:
        raise ValueError(f"min_len must be >= 3 (train part, valid target, test target), got {min_len}")
    missing = {"user_id", "item_id", "timestamp"} - set(interactions.columns)
    if missing:
        raise ValueError(f"interactions lack columns {sorted(missing)}")

    item_strings = interactions["item_id"].astype(str).to_numpy()
    catalogue, item_codes = np.unique(item_strings, return_inverse=True)
    if len(catalogue) and catalogue[0] == PAD_ID:  # sorted, so "" would come first
        raise ValueError("an item id is the empty string, which is reserved for padding")
    item_ids = np.concatenate([np.array([PAD_ID], dtype=object), catalogue.astype(object)])
    item_index = {str(s): k + 1 for k, s in enumerate(catalogue)}

    user_codes, user_uniques = pd.factorize(interactions["user_id"].astype(str), sort=True)
    ts_us = _to_unix_microseconds(interactions["timestamp"])
    order = np.lexsort((np.arange(len(interactions)), ts_us, user_codes))  # last key is primary
    users_sorted = user_codes[order]
    items_sorted = item_codes[order].astype(np.int64) + 1
    ts_sorted = ts_us[order]

    if dedupe_consecutive and len(order):
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = (items_sorted[1:] != items_sorted[:-1]) | (users_sorted[1:] != users_sorted[:-1])
        users_sorted, items_sorted, ts_sorted = users_sorted[keep], items_sorted[keep], ts_sorted[keep]

    # Segment boundaries per user (users_sorted is non-decreasing).
    n_events = len(users_sorted)
    if n_events:
        starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]]).astype(np.int64)
    else:
        starts = np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], n_events).astype(np.int64) if len(starts) else starts
    lengths = ends - starts
    keep_user = lengths >= min_len
    secs = np.floor_divide(ts_sorted, 1_000_000)
    sequences = [items_sorted[s:e] for s, e, k in zip(starts, ends, keep_user, strict=True) if k]
    timestamps = [secs[s:e] for s, e, k in zip(starts, ends, keep_user, strict=True) if k]
    kept_codes = users_sorted[starts[keep_user]]
    users = np.asarray(user_uniques, dtype=object)[kept_codes]

    return SequenceSplit(
        dataset=dataset,
        item_ids=item_ids,
        item_index=item_index,
        users=users,
        sequences=sequences,
        timestamps=timestamps,
        dropped_users=int((~keep_user).sum()),
        meta={"min_len": min_len, "dedupe_consecutive": dedupe_consecutive, "events": int(lengths[keep_user].sum())},
    )
