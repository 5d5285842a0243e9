"""Reference scorers every family's report includes: most-popular, and random as the floor.

Both follow the :data:`models.eval.harness.ScoreFn` contract: call ``fit(split)``, then pass
``model.score_fn`` (or the model itself) to ``evaluate``.
"""

from __future__ import annotations

import numpy as np

from models.eval.split import SequenceSplit, Which


class Popularity:
    """Scores every item by how often it occurs in the *training parts* of all users.

    Only ``sequences[i][:-2]`` is counted. Counting the validation/test targets would leak them:
    the held-out items are exactly the ones whose counts would grow, and a user's own test item
    would be boosted by its own test event. The same counts are used for "valid" and "test", so
    the two parts measure the same model. Ties (many rare items share a count) are left to the
    harness, which breaks them pessimistically.
    """

    name = "popularity"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, split: SequenceSplit) -> Popularity:
        train = split.train_sequences()
        flat = np.concatenate(train) if train else np.zeros(0, dtype=np.int64)
        self.counts = np.bincount(flat, minlength=split.n_items + 1).astype(np.float64)
        self.counts[0] = 0.0
        return self

    def score_fn(self, split: SequenceSplit, rows: np.ndarray, which: Which) -> np.ndarray:
        """The same count vector for every row, as a read-only broadcast view (no copy per batch)."""
        if self.counts is None:
            raise RuntimeError("Popularity.fit(split) must be called before scoring")
        if len(self.counts) != split.n_items + 1:
            raise ValueError(f"fitted on {len(self.counts) - 1} items, split has {split.n_items}")
        return np.broadcast_to(self.counts, (len(rows), len(self.counts)))

    __call__ = score_fn


class RandomScores:
    """Uniform random scores: the chance floor (HR@k ≈ k / n_items), and a check that the harness is not flattering.

    Scores are a function of ``(seed, row, which)`` only, so the result does not depend on the
    batch size or on which other rows are evaluated.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, split: SequenceSplit) -> RandomScores:
        return self

    def score_fn(self, split: SequenceSplit, rows: np.ndarray, which: Which) -> np.ndarray:
        part = 0 if which == "valid" else 1
        out = np.empty((len(rows), split.n_items + 1), dtype=np.float64)
        for j, i in enumerate(rows):
            out[j] = np.random.default_rng([self.seed, part, int(i)]).random(split.n_items + 1)
        return out

    __call__ = score_fn
