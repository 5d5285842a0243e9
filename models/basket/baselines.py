"""Next-basket baselines in the same harness as CASE: G-TopFreq, P-TopFreq, TIFU-KNN.

All of them return dense scores ``[n_queries, n_items + 1]`` (column 0 padding) for
:func:`models.basket.evaluate.basket_metrics`, and see exactly what CASE sees: the training users'
baskets (all of them) and, per query, the user's baskets before the target.

* **G-TopFreq**: items by the number of training baskets that contain them; the same list for all.
* **P-TopFreq**: the user's items by the number of their baskets that contain them (ties: more
  recent last purchase first); below them every other item by G-TopFreq order, so a user with a
  short history still gets a full list (Reality Check's P-TopFreq fills the basket the same way).
* **TIFU-KNN** (Hu et al., SIGIR 2020): a user vector is a decayed average of basket vectors:
  the baskets are cut, in time order, into ``ceil(n / group_size)`` groups of (near) equal size;
  inside a group of g baskets basket j (1 = oldest) has weight ``within_decay ** (g - j) / g``; group i
  of G has weight ``group_decay ** (G - i) / G``. The prediction is
  ``alpha * user + (1 - alpha) * mean of the k nearest training-user vectors`` (Euclidean distance,
  as in the reference implementation's NearestNeighbors). Published settings per dataset are in
  :data:`TIFU_PUBLISHED`; Groceries has none, so its setting is chosen on validation (experiment.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from models.basket.data import Baskets, Queries, item_popularity


def _history_baskets(data: Baskets, queries: Queries) -> list[list[np.ndarray]]:
    return [data.basket_items[u][:t] for u, t in zip(queries.users.tolist(), queries.target_pos.tolist(), strict=True)]


class GTopFreq:
    name = "G-TopFreq"

    def fit(self, data: Baskets, train_users: np.ndarray) -> GTopFreq:
        self.popularity = item_popularity(data, train_users)
        self.n_items = data.n_items
        return self

    def score(self, data: Baskets, queries: Queries) -> np.ndarray:
        pop = self.popularity.astype(np.float32).copy()
        pop[0] = -np.inf
        return np.tile(pop, (len(queries), 1))


class PTopFreq:
    name = "P-TopFreq"

    def fit(self, data: Baskets, train_users: np.ndarray) -> PTopFreq:
        self.popularity = item_popularity(data, train_users)
        return self

    def score(self, data: Baskets, queries: Queries) -> np.ndarray:
        n_cols = data.n_items + 1
        # Global fill strictly below every personal item: popularity scaled into [-1, 0).
        fill = self.popularity / (self.popularity.max() + 1.0) - 1.0
        out = np.tile(fill.astype(np.float64), (len(queries), 1))
        for r, baskets in enumerate(_history_baskets(data, queries)):
            if not baskets:
                continue
            counts = np.zeros(n_cols)
            last = np.zeros(n_cols)
            for j, b in enumerate(baskets):
                counts[b] += 1.0
                last[b] = j + 1
            seen = counts > 0
            # Recency only breaks ties between equal counts: it adds less than 1.
            out[r, seen] = counts[seen] + 0.5 * last[seen] / (len(baskets) + 1)
        out[:, 0] = -np.inf
        return out.astype(np.float32)


@dataclass(frozen=True)
class TIFUParams:
    k: int = 300
    within_decay: float = 0.9
    group_decay: float = 0.7
    alpha: float = 0.7
    group_size: int = 7

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# (k, within-decay, group-decay, alpha, group size) from references.md.
TIFU_PUBLISHED: dict[str, TIFUParams] = {
    "instacart": TIFUParams(900, 0.9, 0.7, 0.9, 3),  # Reality Check's alpha (TIFU paper: 0.7)
    "dunnhumby": TIFUParams(900, 0.9, 0.6, 0.2, 3),
    "tafeng": TIFUParams(300, 0.9, 0.7, 0.7, 7),
}


def tifu_user_vectors(baskets_per_user: Sequence[Sequence[np.ndarray]], n_cols: int, p: TIFUParams) -> sp.csr_array:
    """One decayed-average vector per user (sparse ``[n_users, n_cols]``)."""
    rows, cols, vals = [], [], []
    for r, baskets in enumerate(baskets_per_user):
        n = len(baskets)
        if n == 0:
            continue
        n_groups = math.ceil(n / p.group_size)
        group_of = (np.arange(n) * n_groups) // n  # near-equal consecutive groups, oldest first
        for g in range(n_groups):
            members = np.flatnonzero(group_of == g)
            size = len(members)
            group_w = p.group_decay ** (n_groups - 1 - g) / n_groups
            for j, b in enumerate(members.tolist()):
                w = group_w * p.within_decay ** (size - 1 - j) / size
                items = baskets[b]
                rows.append(np.full(len(items), r))
                cols.append(items)
                vals.append(np.full(len(items), w))
    n_users = len(baskets_per_user)
    if not rows:
        return sp.csr_array((n_users, n_cols))
    m = sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_users, n_cols))
    return sp.csr_array(m)  # duplicates (an item in several baskets) are summed


class TIFUKNN:
    name = "TIFU-KNN"

    def __init__(self, params: TIFUParams) -> None:
        self.params = params

    def fit(self, data: Baskets, train_users: np.ndarray) -> TIFUKNN:
        self.n_cols = data.n_items + 1
        self.pool = tifu_user_vectors([data.basket_items[u] for u in train_users], self.n_cols, self.params)
        self.pool_sq = np.asarray(self.pool.multiply(self.pool).sum(axis=1)).ravel()
        return self

    def score(self, data: Baskets, queries: Queries, chunk: int = 512) -> np.ndarray:
        p = self.params
        users = tifu_user_vectors(_history_baskets(data, queries), self.n_cols, p)
        k = min(p.k, self.pool.shape[0])
        out = np.empty((len(queries), self.n_cols), dtype=np.float32)
        pool_t = self.pool.T.tocsr()
        for lo in range(0, len(queries), chunk):
            q = users[lo : lo + chunk]
            q_sq = np.asarray(q.multiply(q).sum(axis=1)).ravel()
            dist = q_sq[:, None] + self.pool_sq[None, :] - 2.0 * (q @ pool_t).toarray()
            nn_idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
            rows = np.repeat(np.arange(len(q_sq)), k)
            sel = sp.csr_array(
                (np.full(rows.size, 1.0 / k), (rows, nn_idx.ravel())), shape=(len(q_sq), self.pool.shape[0])
            )
            neigh = (sel @ self.pool).toarray()
            out[lo : lo + chunk] = p.alpha * q.toarray() + (1.0 - p.alpha) * neigh
        out[:, 0] = -np.inf
        return out
