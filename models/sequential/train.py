"""Training loop for :class:`~models.sequential.model.SASRec` on :class:`~models.sequential.data.Examples`.

Losses (``TrainConfig.loss``):

* ``"ce"``: full softmax cross-entropy over the whole catalogue at every target position. Exact
  and the strongest on catalogues of a few thousand items (MovieLens); logits are computed only
  at positions that have a target, so memory is ``targets x n_items``, not ``B x L x n_items``.
* ``"sampled"``: sampled softmax, the positive against ``n_negatives`` uniform negatives shared by
  the batch: the cost of the output layer no longer grows with the catalogue.
  (A gSASRec-style gBCE with shared negatives was tried first; in a quick trial on Amazon Beauty it
  collapsed to chance-level validation NDCG@10 and was dropped rather than shipped half-working.)

Threads: one intra-op thread by default. The model is small, and on a shared 2-core machine a
second OpenMP thread mostly spins against other processes.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from feature_store.pipelines.lte import torch_threads
from models.sequential.data import Examples
from models.sequential.model import SASRec

log = logging.getLogger(__name__)

ValidFn = Callable[[SASRec], float]


@dataclass
class TrainConfig:
    """Optimisation settings; recorded with every result so a number can be reproduced."""

    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "ce"  # "ce" | "sampled"
    n_negatives: int = 256
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 1  # epochs between validation checks (early stopping)
    patience: int = 3  # validation checks without improvement before stopping
    min_epochs: int = 1
    max_seconds: float | None = None  # wall-clock budget for the whole fit
    num_threads: int = 1
    bucket_batches: int = 50  # batches per length bucket (0 = plain shuffling)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    """What happened: per-epoch loss, validation history, the best epoch, wall-clock."""

    losses: list[float] = field(default_factory=list)
    valid: list[tuple[int, float]] = field(default_factory=list)  # (epoch, metric)
    best_epoch: int = 0
    best_valid: float = float("nan")
    epochs_run: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _trim(item_seq: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding in every row (positions count from the right, so this is exact)."""
    nonzero = (item_seq != 0).any(dim=0)
    if not bool(nonzero.any()):
        return item_seq[:, -1:]
    first = int(torch.nonzero(nonzero)[0, 0])
    return item_seq[:, first:]


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, gen: torch.Generator, bucket_batches: int
) -> Iterator[torch.Tensor]:
    """Shuffled batches of similar sequence length, in random order.

    Sequences are left-padded to ``max_len`` but many are short (Amazon: ~6 items), and a batch is
    only trimmed to its longest row; grouping similar lengths (within shuffled windows of
    ``bucket_batches`` batches, so batches stay random) cuts the wasted padding several-fold.
    """
    n = len(lengths)
    perm = torch.randperm(n, generator=gen)
    if bucket_batches <= 0:
        batches = list(perm.split(batch_size))
    else:
        batches = []
        window = batch_size * bucket_batches
        for lo in range(0, n, window):
            part = perm[lo : lo + window]
            part = part[torch.argsort(lengths[part], stable=True)]
            batches.extend(part.split(batch_size))
    for i in torch.randperm(len(batches), generator=gen).tolist():
        yield batches[i]


def position_targets(item_seq: torch.Tensor, target: torch.Tensor, prefix: bool) -> torch.Tensor:
    """Target of every output position, 0 = none: ``[B, prefix + L]``.

    Item position ``k`` predicts the next token of ``item_seq + [target]`` (padding positions
    predict nothing); the prefix predicts the first real item (or ``target`` for an empty sequence).
    """
    full = torch.cat([item_seq, target.unsqueeze(1)], dim=1)
    nxt = full[:, 1:].masked_fill(item_seq == 0, 0)
    if not prefix:
        return nxt
    first_real = torch.argmax((full != 0).to(torch.int8), dim=1)
    first = full.gather(1, first_real.unsqueeze(1))
    return torch.cat([first, nxt], dim=1)


def batch_loss(
    model: SASRec,
    item_seq: torch.Tensor,
    target: torch.Tensor,
    lte: torch.Tensor | None,
    cfg: TrainConfig,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean loss over every target position of a batch (see the module doc for the two losses)."""
    item_seq = _trim(item_seq)
    h = model(item_seq, lte)
    y = position_targets(item_seq, target, model.cfg.has_lte)
    keep = y != 0
    hs, ys = h[keep], y[keep]
    emb = model.item_emb.weight
    if cfg.loss == "ce":
        logits = hs @ emb.T
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, ys)
    if cfg.loss == "sampled":
        # Sampled softmax: the positive against k uniform negatives shared by the batch. Uniform
        # sampling needs no logQ correction (every item has the same proposal probability).
        k = min(cfg.n_negatives, model.cfg.n_items - 1)
        neg = torch.randint(1, model.cfg.n_items + 1, (k,), generator=gen)
        pos_logit = (hs * emb[ys]).sum(-1, keepdim=True)
        neg_logit = (hs @ emb[neg].T).masked_fill(neg.unsqueeze(0) == ys.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(ys), dtype=torch.long))
    raise ValueError(f"unknown loss {cfg.loss!r}; use ce or sampled")


@torch.no_grad()
def score_examples(model: SASRec, ex: Examples, rows: np.ndarray | None = None, batch_size: int = 512) -> np.ndarray:
    """Raw next-item scores ``[len(rows), n_items + 1]`` for (a subset of) prepared inputs."""
    model.eval()
    idx = np.arange(len(ex)) if rows is None else np.asarray(rows)
    out = np.empty((len(idx), model.cfg.n_items + 1), dtype=np.float32)
    for lo in range(0, len(idx), batch_size):
        sl = idx[lo : lo + batch_size]
        seq = _trim(torch.from_numpy(ex.item_seq[sl]))
        lte = None if ex.lte is None or not model.cfg.has_lte else torch.from_numpy(ex.lte[sl])
        out[lo : lo + len(sl)] = model.score(seq, lte).numpy()
    return out


def _progress(show: bool, epochs: int, batches: int) -> tuple[Callable[[], None], Callable[[str], None], object]:
    """Rich bars (epochs and batches of the current epoch) or no-ops."""
    if not show:
        return (lambda: None), (lambda _msg: None), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    )
    epoch_task = progress.add_task("epochs", total=epochs)
    batch_task = progress.add_task("batches", total=batches)

    def advance_batch() -> None:
        progress.advance(batch_task)

    def end_epoch(msg: str) -> None:
        progress.update(epoch_task, advance=1, description=f"epochs ({msg})")
        progress.reset(batch_task)

    return advance_batch, end_epoch, progress


def fit(
    model: SASRec,
    train: Examples,
    cfg: TrainConfig,
    valid_fn: ValidFn | None = None,
    show_progress: bool = False,
) -> TrainResult:
    """Train ``model`` in place; with ``valid_fn`` keep the best validation state (early stopping).

    ``valid_fn(model) -> metric`` (higher is better) is called every ``eval_every`` epochs; training
    stops after ``patience`` checks without improvement, or when ``max_seconds`` is spent, and the
    weights of the best check are restored.
    """
    if model.cfg.has_lte and train.lte is None:
        raise ValueError("an LTE variant needs examples with lte (attach_lte)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    result = TrainResult()
    best_state = None
    bad_checks = 0
    n = len(train)
    n_batches = math.ceil(n / cfg.batch_size)
    seq_all = torch.from_numpy(train.item_seq)
    lengths = (seq_all != 0).sum(dim=1)
    tgt_all = torch.from_numpy(train.target)
    lte_all = None if train.lte is None or not model.cfg.has_lte else torch.from_numpy(train.lte)
    t0 = time.perf_counter()
    advance_batch, end_epoch, progress = _progress(show_progress, cfg.epochs, n_batches)
    with torch_threads(cfg.num_threads), progress or _null():  # type: ignore[attr-defined]
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            total, count = 0.0, 0
            for b in length_bucketed_batches(lengths, cfg.batch_size, gen, cfg.bucket_batches):
                lte = None if lte_all is None else lte_all[b]
                loss = batch_loss(model, seq_all[b], tgt_all[b], lte, cfg, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += float(loss.detach()) * len(b)
                count += len(b)
                advance_batch()
            result.losses.append(total / max(count, 1))
            result.epochs_run = epoch
            msg = f"loss {result.losses[-1]:.4f}"
            out_of_time = cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds
            if valid_fn is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time):
                metric = float(valid_fn(model))
                result.valid.append((epoch, metric))
                msg += f", valid {metric:.4f}"
                if not result.valid[:-1] or metric > result.best_valid:
                    result.best_valid, result.best_epoch = metric, epoch
                    best_state = copy.deepcopy(model.state_dict())
                    bad_checks = 0
                elif epoch >= cfg.min_epochs:
                    bad_checks += 1
            log.info("epoch %d/%d: %s", epoch, cfg.epochs, msg)
            end_epoch(msg)
            if valid_fn is not None and bad_checks >= cfg.patience:
                result.stopped = "early"
                break
            if out_of_time:
                result.stopped = "time"
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = result.epochs_run
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


@contextmanager
def _null() -> Iterator[None]:
    yield
