"""The evaluation loop shared by every recommender family: score the catalogue, rank the target, average.

A model plugs in as a :data:`ScoreFn`: given the split, a batch of row indices and which part is
evaluated, it returns scores for the *whole* catalogue, ``(len(rows), n_items + 1)``. The model
must only use ``split.valid_input(i)`` / ``split.test_input(i)`` (and features dated before
``split.target_time(i, which)``) for row ``i``; the harness cannot check that, so it is the one
rule every ScoreFn documents.

Seen-item exclusion (``exclude_seen=True``, the default and the protocol of all reported numbers):
every item in the row's *input* history (train part for "valid"; train part + validation target for
"test") is removed from the candidates, like SASRec/RecBole full ranking. The target is **not**
exempted: un-masking it would tell the ranking where the target is. A target that repeats a
history item is therefore unreachable and counts as a miss; the fraction of such rows is reported
as ``repeat_targets`` so a reader can see how much of the ceiling it costs (MovieLens: none, a
user rates a movie once; Amazon 5-core: almost none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.eval.metrics import exclusion_mask, hit_rate, ndcg, rank_of_targets
from models.eval.split import SequenceSplit, Which, check_which

ScoreFn = Callable[[SequenceSplit, np.ndarray, Which], np.ndarray]
DEFAULT_KS: tuple[int, ...] = (10, 100)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)

PROTOCOL = (
    "Leave-one-out: per user, events stably sorted by (timestamp, original order); last event = test target, "
    "second-to-last = validation target; users with < 3 events dropped; catalogue = every item in the data. "
    "Full ranking over the whole catalogue (no sampled negatives); items in the user's input history are excluded "
    "(a target that repeats a history item is a miss, reported as repeat_targets); ties broken pessimistically. "
    "HR@k = share of users with the target in the top k; NDCG@k = mean of 1/log2(rank+2) for rank < k (0-based). "
    "Values are mean ± sample std over seeds 0, 1, 2. See docs/evaluation.md."
)


@dataclass
class RankResult:
    """Per-row outcome of one evaluation pass, for metrics beyond the defaults and paired tests."""

    rows: np.ndarray  # row indices into the split
    targets: np.ndarray  # target item index per row
    ranks: np.ndarray  # 0-based rank, UNRANKED when the target was excluded
    repeat: np.ndarray  # bool: the target occurs in the row's input history

    def metrics(self, ks: tuple[int, ...] | list[int] = DEFAULT_KS) -> dict[str, float]:
        """HR@k and NDCG@k for every k (means over rows), plus ``users`` and ``repeat_targets``."""
        out: dict[str, float] = {}
        for k in ks:
            out[f"HR@{k}"] = float(hit_rate(self.ranks, k).mean()) if len(self.ranks) else float("nan")
        for k in ks:
            out[f"NDCG@{k}"] = float(ndcg(self.ranks, k).mean()) if len(self.ranks) else float("nan")
        out["users"] = len(self.rows)
        out["repeat_targets"] = float(self.repeat.mean()) if len(self.repeat) else 0.0
        return out


def resolve_rows(split: SequenceSplit, users: np.ndarray | None) -> np.ndarray:
    """Row indices to evaluate: all rows, the given row indices (ints), or the rows of given user ids (str)."""
    if users is None:
        return np.arange(len(split), dtype=np.int64)
    users = np.asarray(users)
    if users.dtype.kind in "iu":
        rows = users.astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(split)):
            raise IndexError(f"row indices must be in [0, {len(split)})")
        return rows
    position = {str(u): i for i, u in enumerate(split.users)}
    missing = [str(u) for u in users if str(u) not in position]
    if missing:
        raise KeyError(f"{len(missing)} users are not in the split, e.g. {missing[0]!r}")
    return np.fromiter((position[str(u)] for u in users), dtype=np.int64, count=len(users))


def history_mask(split: SequenceSplit, rows: np.ndarray, which: Which) -> np.ndarray:
    """Dense bool ``(len(rows), n_items + 1)``: True where the item is in the row's input history."""
    n_cols = split.n_items + 1
    inputs = [split.input(int(i), which) for i in rows]
    mask = exclusion_mask(inputs, len(rows), n_cols)
    mask[:, 0] = False  # padding is excluded by the ranking anyway; keep this a pure history mask
    return mask


def _batches(n: int, batch_size: int, progress: bool, label: str) -> Iterator[slice]:
    starts = range(0, n, batch_size)
    if not progress:
        for lo in starts:
            yield slice(lo, lo + batch_size)
        return
    from rich.progress import Progress  # lazy: keeps the import of this module light

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=len(starts))
        for lo in starts:
            yield slice(lo, lo + batch_size)
            bar.advance(task)


def rank_users(
    score_fn: ScoreFn,
    split: SequenceSplit,
    which: Which = "test",
    exclude_seen: bool = True,
    batch_size: int = 512,
    users: np.ndarray | None = None,
    progress: bool = True,
) -> RankResult:
    """Score every requested row in batches and return the per-row ranks of its target."""
    check_which(which)
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    rows = resolve_rows(split, users)
    n_cols = split.n_items + 1
    ranks = np.empty(len(rows), dtype=np.int64)
    targets = split.targets(rows, which)
    repeat = np.zeros(len(rows), dtype=bool)
    label = f"eval {split.dataset} [{which}]"
    for sl in _batches(len(rows), batch_size, progress, label):
        batch = rows[sl]
        scores = np.asarray(score_fn(split, batch, which))
        if scores.shape != (len(batch), n_cols):
            raise ValueError(
                f"score_fn returned shape {scores.shape}, expected {(len(batch), n_cols)} (rows, n_items + 1)"
            )
        seen = history_mask(split, batch, which)
        t = targets[sl]
        repeat[sl] = seen[np.arange(len(batch)), t]
        ranks[sl] = rank_of_targets(scores, t, seen if exclude_seen else None)
    return RankResult(rows=rows, targets=targets, ranks=ranks, repeat=repeat)


def evaluate(
    score_fn: ScoreFn,
    split: SequenceSplit,
    which: Which = "test",
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    exclude_seen: bool = True,
    batch_size: int = 512,
    users: np.ndarray | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Full-ranking HR@k and NDCG@k (for every k in ``ks``) of ``score_fn`` on one part of the split.

    Returns ``{"HR@10", ..., "NDCG@10", ..., "users", "repeat_targets"}``: means over the evaluated
    rows, their number, and the share whose target repeats a history item (a guaranteed miss when
    ``exclude_seen``).
    """
    result = rank_users(score_fn, split, which, exclude_seen, batch_size, users, progress)
    return result.metrics(ks)


def evaluate_seeds(
    build: Callable[[int], ScoreFn],
    split: SequenceSplit,
    seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
    **kwargs: Any,
) -> list[dict[str, float]]:
    """One :func:`evaluate` run per seed; ``build(seed)`` trains a model and returns its ScoreFn.

    Each run dict carries its ``seed`` so the report keeps the raw runs next to mean ± std.
    """
    runs = []
    for seed in seeds:
        run = evaluate(build(seed), split, **kwargs)
        run["seed"] = seed
        runs.append(run)
    return runs
