"""Training loop for :class:`~models.ctr.model.CTRModel`: BCE, Adam, early stopping on validation AUC.

Defaults follow the BARS/FuxiCTR benchmark settings (batch 4096, Adam lr 1e-3, embedding dim 10
in the model config). Early stopping: validation AUC after every epoch; after ``patience`` epochs
without improvement training stops and the best epoch's weights are restored. ``embedding_l2``
penalises the embedding rows a batch looks up (not the whole table: rows of ids absent from a
batch are left alone), as CTR models over-fit rare ids first.

One intra-op thread by default (``feature_store.pipelines.lte.torch_threads``): the machine is
shared, and a second OpenMP thread mostly spins against the other jobs.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from feature_store.pipelines.lte import torch_threads
from models.ctr.data import CTRData
from models.ctr.metrics import log_loss, roc_auc
from models.ctr.model import CTRModel

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings; recorded with every run so a number can be reproduced."""

    epochs: int = 50
    batch_size: int = 4096
    lr: float = 1e-3
    embedding_l2: float = 0.0
    weight_decay: float = 0.0
    patience: int = 3
    min_epochs: int = 5  # no early stop before this: the first epochs can plateau before the model takes off
    seed: int = 0
    max_seconds: float | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    num_threads: int = 1
    eval_batch_size: int = 16384

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    valid_auc: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_auc: float = float("nan")
    epochs_run: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _tensors(data: CTRData) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    numeric = None if data.numeric is None else torch.from_numpy(np.ascontiguousarray(data.numeric, dtype=np.float32))
    return torch.from_numpy(data.ids), numeric, torch.from_numpy(data.labels.astype(np.float32))


@torch.no_grad()
def predict_logits(model: CTRModel, data: CTRData, batch_size: int = 16384) -> np.ndarray:
    """Raw logits for every row of ``data`` (eval mode, no dropout)."""
    model.eval()
    ids, numeric, _ = _tensors(data)
    out = np.empty(len(data), dtype=np.float32)
    for lo in range(0, len(data), batch_size):
        sl = slice(lo, lo + batch_size)
        out[sl] = model(ids[sl], None if numeric is None else numeric[sl]).numpy()
    return out


def evaluate(model: CTRModel, data: CTRData, scale: float = 1.0, bias: float = 0.0) -> dict[str, float]:
    """AUC and LogLoss of ``sigmoid(scale * logit + bias)`` on ``data``."""
    logits = predict_logits(model, data)
    probs = 1.0 / (1.0 + np.exp(-(scale * logits.astype(np.float64) + bias)))
    return {"AUC": roc_auc(data.labels, probs), "LogLoss": log_loss(data.labels, probs)}


def _progress(show: bool, total: int, desc: str):  # type: ignore[no-untyped-def]
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ep", leave=False, dynamic_ncols=True)


def fit(
    model: CTRModel,
    train: CTRData,
    valid: CTRData | None,
    cfg: TrainConfig,
    show_progress: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train in place; with ``valid``, keep the weights of the best validation AUC (early stopping)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    emb_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    dense = [p for p in model.parameters() if id(p) not in emb_params]
    sparse = [p for p in model.parameters() if id(p) in emb_params]
    opt = torch.optim.Adam(
        [{"params": dense, "weight_decay": cfg.weight_decay}, {"params": sparse, "weight_decay": 0.0}], lr=cfg.lr
    )
    ids_all, num_all, y_all = _tensors(train)
    n = len(train)
    n_batches = math.ceil(n / cfg.batch_size)
    result = TrainResult()
    best_state = None
    bad = 0
    t0 = time.perf_counter()
    bar = _progress(show_progress, cfg.epochs, desc)
    with torch_threads(cfg.num_threads):
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            total = 0.0
            perm = torch.randperm(n, generator=gen)
            for bi in range(n_batches):
                rows = perm[bi * cfg.batch_size : (bi + 1) * cfg.batch_size]
                ids = ids_all[rows]
                logits = model(ids, None if num_all is None else num_all[rows])
                loss = F.binary_cross_entropy_with_logits(logits, y_all[rows])
                total += float(loss.detach()) * len(rows)
                if cfg.embedding_l2 > 0 and model.embedding is not None:
                    loss = loss + cfg.embedding_l2 * model.embedding.table(ids).pow(2).sum(dim=(1, 2)).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                result.steps += 1
                if cfg.max_steps is not None and result.steps >= cfg.max_steps:
                    break
            result.losses.append(total / n)
            result.epochs_run = epoch
            msg = f"loss {result.losses[-1]:.4f}"
            if valid is not None:
                auc = evaluate(model, valid)["AUC"]
                result.valid_auc.append(auc)
                msg += f" valid AUC {auc:.4f}"
                if best_state is None or auc > result.best_valid_auc:
                    result.best_valid_auc, result.best_epoch = auc, epoch
                    best_state = copy.deepcopy(model.state_dict())
                    bad = 0
                elif epoch >= cfg.min_epochs:
                    bad += 1
            log.info("%s epoch %d: %s", desc, epoch, msg)
            if bar is not None:
                bar.set_postfix_str(msg)
                bar.update(1)
            if cfg.max_steps is not None and result.steps >= cfg.max_steps:
                result.stopped = "steps"
                break
            if valid is not None and bad >= cfg.patience:
                result.stopped = "early"
                break
            if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds:
                result.stopped = "time"
                break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = result.epochs_run
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result
