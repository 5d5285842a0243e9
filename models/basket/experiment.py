"""Next-basket evaluation runs: CASE, its no-CNN ablation and the baselines, per dataset and fold seed.

    .venv/bin/python -m models.basket.experiment --dataset groceries [--seeds 0 1 2] [--no-progress]
    .venv/bin/python -m models.basket.experiment --render-only

Each (dataset, model, seed) run is appended to ``var/experiments/basket/runs.jsonl`` (a re-run
replaces the earlier record in the report) and ``docs/results/basket.md`` + ``basket.json`` are
re-rendered after every run. The seed is the fold: it draws the 72/8/20 user split *and* CASE's
initialisation and sampling, so baselines have a spread over seeds too (the Reality Check reports
folds the same way). Checkpoints go to ``var/experiments/basket/<dataset>/``; the seed-0 CASE is
also exported to ONNX there and its test scores are compared with torch.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_store.config import REPO_ROOT
from models.basket.baselines import TIFU_PUBLISHED, TIFUKNN, GTopFreq, PTopFreq, TIFUParams
from models.basket.data import (
    Baskets,
    Queries,
    item_popularity,
    load_baskets,
    make_queries,
    popularity_order,
    split_users,
    training_targets,
)
from models.basket.evaluate import basket_metrics
from models.basket.model import CASE, CASEConfig, save_checkpoint
from models.basket.train import TrainConfig, fit, score_queries
from models.eval.report import append_jsonl, read_jsonl

log = logging.getLogger(__name__)

DEFAULT_ROOT = REPO_ROOT / "var" / "experiments" / "basket"
DATASETS: tuple[str, ...] = ("groceries", "tafeng")
MODELS: tuple[str, ...] = ("G-TopFreq", "P-TopFreq", "TIFU-KNN", "CASE", "CASE-noCNN")
# Model name -> (temporal encoder, negative weighting); see models/basket/model.py and train.py.
CASE_VARIANTS: dict[str, tuple[str, str]] = {
    "CASE": ("cnn", "none"),
    "CASE-noCNN": ("none", "none"),
    "CASE-count": ("count", "none"),
    "CASE-ipw": ("cnn", "inverse_probability"),
}


@dataclass(frozen=True)
class DatasetPlan:
    """Per-dataset settings (documented in docs/results/basket.md)."""

    n_explore: int  # explore candidates per user (popularity order); >= n_items means the full catalogue
    min_baskets: int = 2
    targets_per_user: int | None = None  # training targets per training user (most recent); None = all
    epochs: int = 30
    batch_size: int = 64
    patience: int = 3
    max_minutes: float = 6.0
    tifu_grid: tuple[TIFUParams, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tifu_grid"] = [p.to_dict() for p in self.tifu_grid]
        return d


def _tifu_grid(
    ks: tuple[int, ...] = (100, 300, 900), alphas: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
) -> tuple[TIFUParams, ...]:
    """The published settings, then alpha x k around the Ta-Feng setting (chosen on validation P@10)."""
    grid = list(TIFU_PUBLISHED.values())
    for k in ks:
        for alpha in alphas:
            p = TIFUParams(k=k, within_decay=0.9, group_decay=0.7, alpha=alpha, group_size=7)
            if p not in grid:
                grid.append(p)
    return tuple(grid)


PLANS: dict[str, DatasetPlan] = {
    # 167 items: every item is a candidate (full-catalogue ranking).
    "groceries": DatasetPlan(n_explore=10_000, max_minutes=5.0, tifu_grid=_tifu_grid()),
    # 12k items: the 100 most popular unbought items are the explore candidates; the last training
    # basket of each training user only and a smaller TIFU grid (time budget on 2 shared cores).
    "tafeng": DatasetPlan(
        n_explore=100,
        targets_per_user=1,
        max_minutes=5.0,
        patience=2,
        tifu_grid=_tifu_grid(ks=(300, 900), alphas=(0.5, 0.7, 0.9)),
    ),
}


@dataclass
class Fold:
    data: Baskets
    seed: int
    train_users: np.ndarray
    valid: Queries
    test: Queries
    popularity: np.ndarray
    explore_items: np.ndarray


def make_fold(data: Baskets, seed: int) -> Fold:
    split = split_users(len(data), seed)
    pop = item_popularity(data, split.train)
    return Fold(
        data=data,
        seed=seed,
        train_users=split.train,
        valid=make_queries(data, split.valid),
        test=make_queries(data, split.test),
        popularity=pop,
        explore_items=popularity_order(pop),
    )


def _training_queries(fold: Fold, plan: DatasetPlan) -> Queries:
    q = training_targets(fold.data, fold.train_users)
    if plan.targets_per_user is None:
        return q
    # Keep each user's most recent targets_per_user baskets.
    keep = np.zeros(len(q), dtype=bool)
    n_baskets = {u: len(fold.data.basket_items[u]) for u in fold.train_users.tolist()}
    for i, (u, t) in enumerate(zip(q.users.tolist(), q.target_pos.tolist(), strict=True)):
        keep[i] = t >= n_baskets[u] - plan.targets_per_user
    rows = np.flatnonzero(keep)
    return make_queries(fold.data, q.users[rows], q.target_pos[rows])


def run_baselines(fold: Fold, plan: DatasetPlan) -> list[dict[str, Any]]:
    data = fold.data
    out = []
    for model in (GTopFreq(), PTopFreq()):
        t0 = time.perf_counter()
        model.fit(data, fold.train_users)
        metrics = basket_metrics(model.score(data, fold.test), fold.test)
        out.append({"model": model.name, **metrics, "seconds": round(time.perf_counter() - t0, 1)})
    # TIFU-KNN: the grid point with the best validation P@10 (published settings included).
    t0 = time.perf_counter()
    tried = []
    for params in plan.tifu_grid:
        tifu = TIFUKNN(params).fit(data, fold.train_users)
        tried.append(
            (basket_metrics(tifu.score(data, fold.valid), fold.valid, ks=(10,), overall_only=True)["P@10"], params)
        )
    best_valid, best = max(tried, key=lambda x: x[0])
    tifu = TIFUKNN(best).fit(data, fold.train_users)
    metrics = basket_metrics(tifu.score(data, fold.test), fold.test)
    published = {name: p.to_dict() for name, p in TIFU_PUBLISHED.items()}
    out.append(
        {
            "model": "TIFU-KNN",
            **metrics,
            "valid_P@10": best_valid,
            "tifu_params": best.to_dict(),
            "tifu_grid_size": len(tried),
            "tifu_valid_published": {
                name: next(v for v, p in tried if p.to_dict() == pp) for name, pp in published.items()
            },
            "seconds": round(time.perf_counter() - t0, 1),
        }
    )
    return out


def run_case(
    fold: Fold,
    plan: DatasetPlan,
    name: str,
    root: Path,
    dataset: str,
    show_progress: bool,
    export_onnx: bool = False,
) -> dict[str, Any]:
    data = fold.data
    torch.manual_seed(fold.seed)
    temporal, weighting = CASE_VARIANTS[name]
    cfg = CASEConfig(n_items=data.n_items, temporal=temporal)
    model = CASE(cfg)
    train_q = _training_queries(fold, plan)
    tcfg = TrainConfig(
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        patience=plan.patience,
        max_seconds=plan.max_minutes * 60,
        seed=fold.seed,
        negative_weighting=weighting,
    )
    result = fit(
        model, data, train_q, fold.valid, fold.popularity, fold.explore_items, plan.n_explore, tcfg, show_progress
    )
    t0 = time.perf_counter()
    scores = score_queries(model, data, fold.test, fold.explore_items, plan.n_explore)
    metrics = basket_metrics(scores, fold.test)
    eval_seconds = time.perf_counter() - t0
    ckpt = root / dataset / f"{name}-s{fold.seed}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    explore_ids = [str(data.item_ids[i]) for i in fold.explore_items[: plan.n_explore]]
    save_checkpoint(model, str(ckpt), {"explore_items": explore_ids, "n_explore": plan.n_explore})
    rec: dict[str, Any] = {
        "model": name,
        **metrics,
        "valid_P@10": result.best_valid,
        "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_examples": len(train_q),
        "loss_history": [round(v, 4) for v in result.losses],
        "valid_history": [(e, round(v, 5)) for e, v in result.valid],
        "model_config": cfg.to_dict(),
        "train_config": tcfg.to_dict(),
        "checkpoint": str(ckpt),
    }
    if export_onnx:
        rec["onnx"] = onnx_check(model, fold, plan, root / dataset / f"onnx-{name}-s{fold.seed}", result.best_valid)
    return rec


def onnx_check(model: CASE, fold: Fold, plan: DatasetPlan, out: Path, valid_p10: float) -> dict[str, Any]:
    """Export, score the test users through ONNX Runtime, and compare with torch (max |diff|, P@10)."""
    from models.basket.export import OnnxCASE, export_case
    from models.basket.features import build_from_indices, pad_batch

    data = fold.data
    explore_ids = [str(data.item_ids[i]) for i in fold.explore_items[: plan.n_explore]]
    export_case(model, [str(i) for i in data.item_ids], out, explore_ids, plan.n_explore, valid_p10)
    session = OnnxCASE(out)
    max_diff = 0.0
    for lo in range(0, len(fold.test), 256):
        rows = range(lo, min(lo + 256, len(fold.test)))
        inputs = []
        for r in rows:
            items, days = data.history(int(fold.test.users[r]), int(fold.test.target_pos[r]))
            inputs.append(
                build_from_indices(
                    items, days, int(fold.test.as_of[r]), 1024, fold.explore_items, plan.n_explore, model.cfg.horizon
                )
            )
        days_b, ids_b, mask_b = pad_batch(inputs)
        s_onnx = session.run(days_b, ids_b, mask_b)
        with torch.no_grad():
            s_torch = model(torch.from_numpy(days_b), torch.from_numpy(ids_b), torch.from_numpy(mask_b)).numpy()
        real = mask_b > 0
        max_diff = max(max_diff, float(np.abs(s_onnx[real] - s_torch[real]).max()))
    return {"dir": str(out), "max_abs_diff_vs_torch": max_diff, "test_users": len(fold.test)}


def benchmark_onnx(
    dataset: str, root: Path = DEFAULT_ROOT, seed: int = 0, users: int = 16, repeats: int = 5
) -> dict[str, Any]:
    """ONNX Runtime cost per user of the recorded seed-``seed`` CASE at 64, 256 and 1,024 candidates.

    Synthetic inputs (random purchase days, random items) of the served shapes; one intra-op thread
    (``models.onnx_runtime``); the best of ``repeats`` timings of a batch of ``users`` users.
    """
    from models.basket.export import OnnxCASE, export_case
    from models.basket.model import load_checkpoint

    model, _ = load_checkpoint(str(root / dataset / f"CASE-s{seed}.pt"))
    data_items = [""] + [f"item{i}" for i in range(model.cfg.n_items)]
    out = root / dataset / f"onnx-benchmark-s{seed}"
    export_case(model, data_items, out)
    session = OnnxCASE(out)
    rng = np.random.default_rng(0)
    ms_per_user = {}
    for n in (64, 256, 1024):
        days = (rng.random((users, n, model.cfg.horizon)) < 0.01).astype(np.float32)
        ids = rng.integers(1, model.cfg.n_items + 1, size=(users, n)).astype(np.int64)
        mask = np.ones((users, n), dtype=np.float32)
        session.run(days, ids, mask)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(days, ids, mask)
            best = min(best, time.perf_counter() - t0)
        ms_per_user[str(n)] = 1000.0 * best / users
    return {"dataset": dataset, "model": "CASE", "seed": seed, "kind": "benchmark", "ms_per_user": ms_per_user}


# ------------------------------------------------------------------------------------------ run store


def runs_path(root: Path = DEFAULT_ROOT) -> Path:
    return Path(root) / "runs.jsonl"


def append_run(record: dict[str, Any], root: Path = DEFAULT_ROOT) -> None:
    append_jsonl(runs_path(root), record)


def read_runs(root: Path = DEFAULT_ROOT) -> list[dict[str, Any]]:
    return read_jsonl(runs_path(root))


def run_dataset(
    dataset: str,
    seeds: list[int],
    models: list[str],
    root: Path = DEFAULT_ROOT,
    show_progress: bool = True,
    plan: DatasetPlan | None = None,
    render: bool = True,
) -> list[dict[str, Any]]:
    """Every requested (model, seed) of a dataset; each finished run is appended and the report re-rendered."""
    from models.basket.report import render_report

    torch.set_num_threads(1)
    plan = plan or PLANS[dataset]
    data = load_baskets(dataset, plan.min_baskets)
    new = []
    for seed in seeds:
        fold = make_fold(data, seed)
        common = {
            "dataset": dataset,
            "seed": seed,
            "split": {"train": len(fold.train_users), "valid": len(fold.valid), "test": len(fold.test)},
            "data_stats": data.stats,
            "n_items": data.n_items,
            "time_unit": data.time_unit,
            "plan": plan.to_dict(),
        }
        if any(m in models for m in ("G-TopFreq", "P-TopFreq", "TIFU-KNN")):
            for rec in run_baselines(fold, plan):
                if rec["model"] not in models:
                    continue
                append_run({**common, **rec}, root)
                new.append({**common, **rec})
                log.info(
                    "%s seed %d %s: test P@10 %.4f R@10 %.4f", dataset, seed, rec["model"], rec["P@10"], rec["R@10"]
                )
            if render:
                render_report(root)
        for name in CASE_VARIANTS:
            if name not in models:
                continue
            log.info("%s seed %d: training %s", dataset, seed, name)
            rec = run_case(fold, plan, name, root, dataset, show_progress, export_onnx=(seed == min(seeds)))
            append_run({**common, **rec}, root)
            new.append({**common, **rec})
            log.info("%s seed %d %s: test P@10 %.4f R@10 %.4f", dataset, seed, name, rec["P@10"], rec["R@10"])
            if render:
                render_report(root)
    return new


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=DATASETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=[*MODELS, "CASE-count", "CASE-ipw"])
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--benchmark", action="store_true", help="time the seed-0 CASE ONNX graph at 64/256/1024")
    parser.add_argument("--max-minutes", type=float, default=None, help="override the plan's per-fit cap")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from models.basket.report import render_report

    if args.render_only:
        render_report(args.root)
        return
    if args.dataset is None:
        parser.error("--dataset is required unless --render-only")
    if args.benchmark:
        append_run(benchmark_onnx(args.dataset, args.root), args.root)
        render_report(args.root)
        return
    plan = PLANS[args.dataset]
    if args.max_minutes is not None:
        plan = replace(plan, max_minutes=args.max_minutes)
    run_dataset(args.dataset, args.seeds, args.models, args.root, not args.no_progress, plan)


if __name__ == "__main__":
    main()
