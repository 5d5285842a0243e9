"""Baskets per user and the user-level split of "A Next Basket Recommendation Reality Check".

Protocol (Li et al., TOIS 2023; their ``keyset_fold.py``):

* users are shuffled with the fold seed and split **by user**: 72% training users, 8% validation
  users, 20% test users (train = first 4/5 * 0.9, validation = the rest of the first 4/5);
* for a validation or test user the **last basket is the target**; every earlier basket is the
  input history; the as-of day of the prediction is the day of the target basket;
* training users contribute all their baskets (models may also use each of their earlier baskets
  as a target, see :func:`training_targets`);
* users need at least ``min_baskets`` baskets (2: a target and at least one history basket).

Items are indexed 1..n_items over the whole catalogue of the dataset (index 0 = padding), as in
the sequential family. A basket is a set: repeated lines of one item are one purchase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from feature_store.sources.schema import Dataset
from models.basket.features import day_number


@dataclass
class Baskets:
    """Every kept user's baskets in time order, items as model indices and days as day numbers."""

    name: str
    item_ids: np.ndarray  # index -> item id; item_ids[0] == "" (padding)
    users: np.ndarray  # user ids, aligned with basket_items / basket_days
    basket_items: list[list[np.ndarray]]  # per user, per basket: sorted unique item indices
    basket_days: list[np.ndarray]  # per user: day number of each basket (non-decreasing)
    time_unit: str = "day"  # "day" or "basket step" (order-only data)
    stats: dict[str, object] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def __len__(self) -> int:
        return len(self.users)

    def history(self, user: int, n_baskets: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(item_idx, day)`` lines of the user's first ``n_baskets`` baskets (all when None)."""
        baskets = self.basket_items[user][:n_baskets]
        days = self.basket_days[user][: len(baskets)]
        if not baskets:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        items = np.concatenate(baskets)
        return items, np.repeat(days, [len(b) for b in baskets])


def from_dataset(ds: Dataset, min_baskets: int = 2) -> Baskets:
    """Group a canonical next-basket dataset into per-user baskets (users with < ``min_baskets`` dropped)."""
    inter = ds.interactions
    if "basket_id" not in inter.columns:
        raise ValueError(f"{ds.name} has no basket_id column")
    catalogue = np.sort(inter["item_id"].astype(str).unique())
    item_ids = np.concatenate([[""], catalogue]).astype(object)
    index = pd.Series(np.arange(1, len(catalogue) + 1), index=catalogue)
    frame = pd.DataFrame(
        {
            "user": inter["user_id"].astype(str).to_numpy(),
            "basket": inter["basket_id"].astype(str).to_numpy(),
            "item": index.loc[inter["item_id"].astype(str)].to_numpy(),
            "day": np.asarray(day_number(inter["timestamp"]), dtype=np.int64),
        }
    ).drop_duplicates(["user", "basket", "item"])
    # A basket's day is its first line's day; baskets ordered by (day, basket id) within a user.
    frame["bday"] = frame.groupby(["user", "basket"])["day"].transform("min")
    frame = frame.sort_values(["user", "bday", "basket", "item"], kind="stable")
    users, basket_items, basket_days = [], [], []
    for user, g in frame.groupby("user", sort=True):
        keys = g["basket"].to_numpy()
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        if len(starts) < min_baskets:
            continue
        items = g["item"].to_numpy(dtype=np.int64)
        bounds = np.r_[starts, len(g)]
        users.append(user)
        basket_items.append([items[bounds[i] : bounds[i + 1]] for i in range(len(starts))])
        basket_days.append(g["bday"].to_numpy(dtype=np.int64)[starts])
    n_all = inter["user_id"].nunique()
    return Baskets(
        name=ds.name,
        item_ids=item_ids,
        users=np.array(users, dtype=object),
        basket_items=basket_items,
        basket_days=basket_days,
        time_unit="basket step" if ds.time_kind == "day_index" else "day",
        stats={"users_all": int(n_all), "users_kept": len(users), "min_baskets": min_baskets},
    )


def load_baskets(dataset: str, min_baskets: int = 2) -> Baskets:
    """Groceries or Ta-Feng from the shared datasets root, via the project's adapters."""
    from feature_store.sources.adapters import load_dataset

    ds = load_dataset(dataset, on_bad_rows="skip")
    out = from_dataset(ds, min_baskets)
    reports = ds.meta.get("load_reports") or []
    out.stats["rows_skipped"] = int(sum(getattr(r, "rows_skipped", 0) for r in reports))  # type: ignore[union-attr]
    return out


@dataclass
class UserSplit:
    """User rows (indices into :class:`Baskets`) of each part, for one fold seed."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    seed: int


def split_users(n_users: int, seed: int) -> UserSplit:
    """72/8/20 user split (Reality Check ``keyset_fold.py``), shuffled with ``seed``."""
    perm = np.random.default_rng(seed).permutation(n_users)
    # The reference's arithmetic (4/5 * 0.9 and 4/5), not 0.72 + 0.08, which rounds down to 0.7999...
    n_train = int(n_users * 4 / 5 * 0.9)
    n_valid = int(n_users * 4 / 5) - n_train
    return UserSplit(
        train=np.sort(perm[:n_train]),
        valid=np.sort(perm[n_train : n_train + n_valid]),
        test=np.sort(perm[n_train + n_valid :]),
        seed=seed,
    )


@dataclass
class Queries:
    """Prediction queries: one (user, target basket) each; history = that user's earlier baskets."""

    users: np.ndarray  # user rows
    target_pos: np.ndarray  # index of the target basket in the user's basket list
    as_of: np.ndarray  # day number of the target basket
    targets: list[np.ndarray]  # item indices of the target basket
    history_items: list[np.ndarray]  # unique item indices bought before (repeat/explore split)

    def __len__(self) -> int:
        return len(self.users)


def make_queries(data: Baskets, users: np.ndarray, target_pos: np.ndarray | None = None) -> Queries:
    """Queries for ``users``; the target is the last basket unless ``target_pos`` says otherwise."""
    users = np.asarray(users, dtype=np.int64)
    if target_pos is None:
        target_pos = np.array([len(data.basket_items[u]) - 1 for u in users], dtype=np.int64)
    targets, hist, as_of = [], [], []
    for u, t in zip(users.tolist(), target_pos.tolist(), strict=True):
        targets.append(data.basket_items[u][t])
        before = data.basket_items[u][:t]
        hist.append(np.unique(np.concatenate(before)) if before else np.zeros(0, dtype=np.int64))
        as_of.append(int(data.basket_days[u][t]))
    return Queries(users, np.asarray(target_pos, dtype=np.int64), np.array(as_of, dtype=np.int64), targets, hist)


def training_targets(data: Baskets, users: np.ndarray, last_only: bool = False) -> Queries:
    """Training queries: every basket after the first of each training user (or only the last)."""
    rows, pos = [], []
    for u in np.asarray(users, dtype=np.int64).tolist():
        n = len(data.basket_items[u])
        ks = [n - 1] if last_only else list(range(1, n))
        rows.extend([u] * len(ks))
        pos.extend(ks)
    return make_queries(data, np.array(rows, dtype=np.int64), np.array(pos, dtype=np.int64))


def item_popularity(data: Baskets, users: np.ndarray) -> np.ndarray:
    """Number of baskets containing each item among ``users``' baskets (all of them): ``[n_items + 1]``."""
    counts = np.zeros(data.n_items + 1, dtype=np.float64)
    for u in np.asarray(users, dtype=np.int64).tolist():
        for b in data.basket_items[u]:
            counts[b] += 1.0
    counts[0] = 0.0
    return counts


def popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Item indices (never 0) by descending popularity, ties by index: the explore candidate list."""
    idx = np.arange(1, len(popularity))
    return idx[np.lexsort((idx, -popularity[1:]))]
