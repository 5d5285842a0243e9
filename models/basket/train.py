"""Training CASE with BCE on sampled candidates, model selection on validation P@10.

One training example = one (training user, target basket) with the user's earlier baskets as
history and the target basket's day as the as-of day (every basket after the first, by default).
Its candidates are built by :func:`models.basket.features.build_from_indices` (the serving
function) plus sampled items; the loss is BCE on:

* every target item (positives; explore positives are added as all-zero candidates);
* about ``neg_ratio`` (10) negatives per positive: 45% *hard* (items the user bought before but
  not in this basket), 45% *frequency-based* (never-bought items drawn by training popularity),
  10% *random* (never-bought items drawn uniformly). When a user has too few hard negatives the
  shortfall is drawn by frequency, so the ratio stays at ``neg_ratio``.

Repeat candidates that are not drawn as hard negatives stay in the input (they are part of the
user's set, which the model summarises) but carry no loss. Explore candidates never enter the
set summary (:func:`models.basket.model.context_mask`), so scoring a few sampled negatives in
training and a long explore list in evaluation gives the same per-item scores.

Optimiser: AdamW (lr 1e-3, weight decay 0.01). After every epoch the model scores the validation
users exactly as at test time; the state with the best validation P@10 is restored at the end
(early stop after ``patience`` epochs without improvement, or at ``max_seconds``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from feature_store.pipelines.lte import torch_threads
from models.basket.data import Baskets, Queries
from models.basket.evaluate import basket_metrics, dense_scores
from models.basket.features import MAX_ITEMS, build_from_indices, pad_batch
from models.basket.model import CASE

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation and sampling settings; recorded with every run."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    neg_ratio: float = 10.0
    hard_share: float = 0.45
    freq_share: float = 0.45  # the rest (0.10) is uniform random
    grad_clip: float = 1.0
    patience: int = 3
    max_seconds: float | None = None
    max_items: int = MAX_ITEMS
    seed: int = 0
    num_threads: int = 1
    valid_metric: str = "P@10"
    # "none": the reference (every sampled candidate weight 1); "inverse_probability": see
    # _inverse_probability_weights (a tuning option, measured on validation in docs/results/basket.md).
    negative_weighting: str = "none"
    restore_best: bool = True  # False: keep the last epoch's weights (validation is only logged)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    valid: list[tuple[int, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_valid: float = float("nan")
    epochs_run: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _sample_without(
    rng: np.random.Generator, n: int, probs: np.ndarray | None, forbidden: np.ndarray, n_cols: int
) -> np.ndarray:
    """Up to ``n`` distinct item indices (1..n_cols-1) not in ``forbidden``, drawn by ``probs`` (or uniformly)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    draw = rng.choice(n_cols, size=4 * n + 8, replace=True, p=probs)
    draw = draw[(draw != 0) & ~np.isin(draw, forbidden)]
    _, first = np.unique(draw, return_index=True)
    return draw[np.sort(first)][:n].astype(np.int64)


def training_batch(
    data: Baskets,
    queries: Queries,
    rows: np.ndarray,
    popularity: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    horizon: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(purchase_days, item_ids, item_mask, labels, loss_weight)`` for the examples ``rows``."""
    n_cols = data.n_items + 1
    freq_p = popularity / popularity.sum()
    users, labels, weights = [], [], []
    for r in rows.tolist():
        u, t = int(queries.users[r]), int(queries.target_pos[r])
        items, days = data.history(u, t)
        base = build_from_indices(items, days, int(queries.as_of[r]), cfg.max_items, horizon=horizon)
        target = queries.targets[r]
        repeat = base.item_ids
        n_neg = round(cfg.neg_ratio * len(target))
        hard_pool = repeat[~np.isin(repeat, target)]
        n_hard = min(len(hard_pool), round(cfg.hard_share * n_neg))
        hard = rng.choice(hard_pool, size=n_hard, replace=False) if n_hard else np.zeros(0, np.int64)
        n_rand = round((1.0 - cfg.hard_share - cfg.freq_share) * n_neg)
        n_freq = n_neg - n_hard - n_rand
        taken = np.concatenate([repeat, target])
        freq = _sample_without(rng, n_freq, freq_p, taken, n_cols)
        rand = _sample_without(rng, n_rand, None, np.concatenate([taken, freq]), n_cols)
        explore = np.concatenate([target[~np.isin(target, repeat)], freq, rand])
        ids = np.concatenate([repeat, explore])
        matrix = np.concatenate([base.purchase_days, np.zeros((len(explore), horizon), dtype=np.float32)])
        y = np.isin(ids, target).astype(np.float32)
        w = ((y > 0) | np.isin(ids, hard) | np.isin(ids, freq) | np.isin(ids, rand)).astype(np.float32)
        if cfg.negative_weighting == "inverse_probability":
            w = _inverse_probability_weights(ids, w, y, hard, hard_pool, freq, rand, freq_p, taken, n_cols)
        users.append((matrix, ids, np.ones(len(ids), dtype=np.float32)))
        labels.append(y)
        weights.append(w)
    days_b, ids_b, mask_b = pad_batch(users)
    y_b = np.zeros_like(mask_b)
    w_b = np.zeros_like(mask_b)
    for b, (y, w) in enumerate(zip(labels, weights, strict=True)):
        y_b[b, : len(y)] = y
        w_b[b, : len(w)] = w
    return tuple(torch.from_numpy(a) for a in (days_b, ids_b, mask_b, y_b, w_b))  # type: ignore[return-value]


def _inverse_probability_weights(
    ids: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    hard: np.ndarray,
    hard_pool: np.ndarray,
    freq: np.ndarray,
    rand: np.ndarray,
    freq_p: np.ndarray,
    taken: np.ndarray,
    n_cols: int,
) -> np.ndarray:
    """Loss weights that make the sampled negatives stand for *every* candidate of their kind.

    Hard negatives nearly exhaust a short history, while 10 explore negatives stand for ~160
    never-bought items (Groceries); unweighted, the model sees explore items as negatives far less
    often than repeat items and over-ranks them. Each sampled negative is weighted by 1 / (expected
    number of times it is drawn): |hard pool| / n_hard for hard ones; 1 / (n_freq q_i + n_rand / |pool|)
    for explore ones, q_i = popularity share within the never-bought pool (the mixture of the two
    explore samplers). Positives keep weight 1.
    """
    out = w.copy()
    if len(hard):
        out[np.isin(ids, hard)] = len(hard_pool) / len(hard)
    explore_neg = np.isin(ids, freq) | np.isin(ids, rand)
    if explore_neg.any():
        pool = np.ones(n_cols, dtype=bool)
        pool[0] = False
        pool[taken] = False
        q = np.where(pool, freq_p, 0.0)
        q = q / max(q.sum(), 1e-12)
        expected = len(freq) * q[ids[explore_neg]] + len(rand) / max(pool.sum(), 1)
        out[explore_neg] = 1.0 / np.maximum(expected, 1e-6)
    out[y > 0] = 1.0
    return out.astype(np.float32)


def bucketed_batches(
    sizes: np.ndarray, batch_size: int, rng: np.random.Generator, window: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of examples with similar candidate counts, in random order.

    A batch is padded to its largest example; grouping similar sizes (inside shuffled windows of
    ``window`` batches, so batches stay random) roughly halves the padded compute on Groceries.
    """
    perm = rng.permutation(len(sizes))
    batches: list[np.ndarray] = []
    span = batch_size * window
    for lo in range(0, len(perm), span):
        part = perm[lo : lo + span]
        part = part[np.argsort(sizes[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.no_grad()
def score_queries(
    model: CASE,
    data: Baskets,
    queries: Queries,
    explore_items: np.ndarray,
    n_explore: int,
    max_items: int = MAX_ITEMS,
    batch_size: int = 128,
) -> np.ndarray:
    """Dense ``[n_queries, n_items + 1]`` scores (non-candidates ``-inf``), built exactly as served."""
    model.eval()
    horizon = model.cfg.horizon
    ids_all, scores_all = [], []
    for lo in range(0, len(queries), batch_size):
        inputs = []
        for r in range(lo, min(lo + batch_size, len(queries))):
            items, days = data.history(int(queries.users[r]), int(queries.target_pos[r]))
            inputs.append(
                build_from_indices(items, days, int(queries.as_of[r]), max_items, explore_items, n_explore, horizon)
            )
        days_b, ids_b, mask_b = pad_batch(inputs)
        s = model(torch.from_numpy(days_b), torch.from_numpy(ids_b), torch.from_numpy(mask_b)).numpy()
        for b, u in enumerate(inputs):
            ids_all.append(u.item_ids)
            scores_all.append(s[b, : len(u)])
    return dense_scores(ids_all, scores_all, data.n_items)


def fit(
    model: CASE,
    data: Baskets,
    train_queries: Queries,
    valid_queries: Queries,
    popularity: np.ndarray,
    explore_items: np.ndarray,
    n_explore: int,
    cfg: TrainConfig,
    show_progress: bool = False,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; the best validation state is loaded back before returning."""
    result = TrainResult()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best_state = copy.deepcopy(model.state_dict())
    since_best = 0
    # Expected candidates per example: history items + positives + neg_ratio negatives per positive.
    sizes = np.array(
        [
            len(h) + (1 + cfg.neg_ratio) * len(t)
            for h, t in zip(train_queries.history_items, train_queries.targets, strict=True)
        ]
    )
    t0 = time.perf_counter()
    with torch_threads(cfg.num_threads):
        for epoch in range(cfg.epochs):
            model.train()
            batches = bucketed_batches(sizes, cfg.batch_size, rng)
            bar = None
            if show_progress:
                from tqdm import tqdm

                bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}", leave=False)
            total, n_seen = 0.0, 0
            for rows in batches:
                days, ids, mask, y, w = training_batch(
                    data, train_queries, rows, popularity, cfg, rng, model.cfg.horizon
                )
                logits = model(days, ids, mask)
                loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum() / w.sum()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += loss.item() * len(rows)
                n_seen += len(rows)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total / n_seen:.4f}")
                if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds:
                    break
            if bar is not None:
                bar.close()
            result.losses.append(total / max(n_seen, 1))
            scores = score_queries(model, data, valid_queries, explore_items, n_explore, cfg.max_items)
            metric = basket_metrics(scores, valid_queries, ks=(10,), overall_only=True)[cfg.valid_metric]
            result.valid.append((epoch + 1, metric))
            result.epochs_run = epoch + 1
            elapsed = time.perf_counter() - t0
            log.info(
                "epoch %d: loss %.4f, valid %s %.4f (%.0f s)",
                epoch + 1,
                result.losses[-1],
                cfg.valid_metric,
                metric,
                elapsed,
            )
            if on_epoch is not None:
                on_epoch(epoch + 1, result.losses[-1], metric)
            if not metric <= result.best_valid:  # also true for the first (NaN best)
                result.best_valid, result.best_epoch = metric, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
                since_best = 0
            else:
                since_best += 1
            if since_best >= cfg.patience:
                result.stopped = "patience"
                break
            if cfg.max_seconds is not None and elapsed > cfg.max_seconds:
                result.stopped = "time"
                break
    if cfg.restore_best:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result
