"""CTR experiments: the model table (mean ± std over seeds), the scaling curve and the SSR ablation.

    .venv/bin/python -m models.ctr.experiment --dataset frappe --seeds 0 1 2
    .venv/bin/python -m models.ctr.experiment --dataset frappe --scaling --seeds 0
    .venv/bin/python -m models.ctr.experiment --dataset frappe --ablation --seeds 0
    .venv/bin/python -m models.ctr.experiment --dataset frappe --tune --seeds 0
    .venv/bin/python -m models.ctr.experiment --dataset frappe --tuned --seeds 0 1 2
    .venv/bin/python -m models.ctr.experiment --dataset frappe --long --seeds 0 1 2
    .venv/bin/python -m models.ctr.experiment --dataset criteo --seeds 0
    .venv/bin/python -m models.ctr.experiment --render-only

Every finished run is appended to ``var/experiments/ctr/runs.jsonl`` (one JSON object a line)
and the results doc is re-rendered from that file (docs/results/ctr.md, ctr.json,
ctr_scaling.png), so an interrupted sweep keeps what it finished. A re-run of the same
(dataset, kind, model, size, seed) replaces the earlier record in the doc.

Budgets: the dense baselines use the BARS widths (MLP 400-400-400, 3 cross layers); SSR's fused
width is chosen by :func:`match_budget` so its dense (non-embedding) parameter count is as close
as possible to DCNv2's. The embedding tables are identical for every model (same spec, D = 10).
Seed 0 of every table model is exported to ONNX under ``<root>/<dataset>/artifacts/<model>`` and
checked against torch on the test rows (encode_rows + ONNX Runtime).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_store.config import REPO_ROOT, FeatureStoreSettings
from feature_store.pipelines.lte import torch_threads
from models.ctr.calibrate import fit_platt
from models.ctr.data import CTRSplits, criteo_splits, frappe_splits, synthetic_splits
from models.ctr.metrics import expected_calibration_error, log_loss, roc_auc
from models.ctr.model import CalibratedCTR, CTRConfig, CTRModel, count_parameters
from models.ctr.train import TrainConfig, fit, predict_logits
from models.eval.report import append_jsonl, read_jsonl

log = logging.getLogger(__name__)

DEFAULT_ROOT = REPO_ROOT / "var" / "experiments" / "ctr"
DATASETS: tuple[str, ...] = ("frappe", "criteo", "synthetic")
TABLE_MODELS: tuple[str, ...] = ("LR", "FM", "DeepFM", "DCNv2", "SSR-S", "SSR-D")
SCALING_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 1024)
SCALING_MODELS: tuple[str, ...] = ("DCNv2", "DNN", "SSR-S", "SSR-D")


@dataclass(frozen=True)
class DatasetPlan:
    """Training and architecture settings of one data set (see docs/results/ctr.md for how they were chosen)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    embed_dim: int = 10
    hidden: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.1
    n_cross: int = 3
    ssr_views: int = 4
    ssr_keep: float = 0.5
    ssr_blocks: int = 2
    ics_iters: int = 2
    export: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


PLANS: dict[str, DatasetPlan] = {
    # Batch 1024, not BARS's 4096: our Frappe training set is ~1/4 of the NFM train file BARS uses,
    # so 1024 keeps about as many steps per epoch (~45); at 4096 FM stopped on an early plateau
    # and LR was still improving after 100 epochs (first trial, runs discarded).
    "frappe": DatasetPlan(
        train=TrainConfig(epochs=200, batch_size=1024, lr=1e-3, patience=3, min_epochs=5, max_seconds=600)
    ),
    # Format proof only (1,999 rows): a handful of epochs, no claims.
    "criteo": DatasetPlan(train=TrainConfig(epochs=5, batch_size=256, lr=1e-3, patience=5), hidden=(64, 64)),
    "synthetic": DatasetPlan(train=TrainConfig(epochs=100, batch_size=1024, lr=1e-3, patience=3)),
}


def load_splits(dataset: str, root: Path | None = None) -> CTRSplits:
    datasets_root = root or FeatureStoreSettings().datasets_root
    if dataset == "frappe":
        return frappe_splits(datasets_root)
    if dataset == "criteo":
        return criteo_splits(datasets_root)
    if dataset == "synthetic":
        return synthetic_splits()
    raise ValueError(f"unknown dataset {dataset!r}; use one of {DATASETS}")


def base_config(splits: CTRSplits, plan: DatasetPlan, model: str, **changes: Any) -> CTRConfig:
    cfg = CTRConfig(
        model=model,
        n_features=splits.spec.n_features,
        n_categorical=len(splits.spec.categorical),
        n_numeric=len(splits.spec.numeric),
        embed_dim=plan.embed_dim,
        hidden=plan.hidden,
        dropout=plan.dropout,
        n_cross=plan.n_cross,
        ssr_views=plan.ssr_views,
        ssr_keep=plan.ssr_keep,
        ssr_blocks=plan.ssr_blocks,
        ics_iters=plan.ics_iters,
    )
    return cfg.with_(**changes)


def dense_params(cfg: CTRConfig) -> int:
    return count_parameters(CTRModel(cfg))["dense"]


def ssr_config(base: CTRConfig, width: int) -> CTRConfig:
    """SSR with fused width ``width``; the views split it evenly (``views * view_dim = width``)."""
    view_dim = max(1, round(width / base.ssr_views))
    return base.with_(ssr_hidden=width, ssr_view_dim=view_dim)


def match_budget(target: int, make: Callable[[int], CTRConfig], lo: int = 8, hi: int = 8192) -> CTRConfig:
    """The config ``make(width)`` whose dense parameter count is closest to ``target`` (bisection on width)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dense_params(make(mid)) < target:
            lo = mid
        else:
            hi = mid
    a, b = make(lo), make(hi)
    return a if abs(dense_params(a) - target) <= abs(dense_params(b) - target) else b


def table_configs(splits: CTRSplits, plan: DatasetPlan) -> dict[str, CTRConfig]:
    """The six table models; SSR-S and SSR-D matched to DCNv2's dense parameter count."""
    dcn = base_config(splits, plan, "dcnv2")
    budget = dense_params(dcn)
    ssr_s = base_config(splits, plan, "ssr", ssr_filter="static")
    ssr_d = base_config(splits, plan, "ssr", ssr_filter="ics")
    return {
        "LR": base_config(splits, plan, "lr"),
        "FM": base_config(splits, plan, "fm"),
        "DeepFM": base_config(splits, plan, "deepfm"),
        "DCNv2": dcn,
        "SSR-S": match_budget(budget, lambda w: ssr_config(ssr_s, w)),
        "SSR-D": match_budget(budget, lambda w: ssr_config(ssr_d, w)),
    }


def scaling_configs(splits: CTRSplits, plan: DatasetPlan, width: int) -> dict[str, CTRConfig]:
    """One size step: DCNv2 / DNN with MLP ``width`` x 3; SSR-S / SSR-D matched to DCNv2's budget."""
    dcn = base_config(splits, plan, "dcnv2", hidden=(width,) * 3)
    budget = dense_params(dcn)
    ssr_s = base_config(splits, plan, "ssr", ssr_filter="static")
    ssr_d = base_config(splits, plan, "ssr", ssr_filter="ics")
    return {
        "DCNv2": dcn,
        "DNN": base_config(splits, plan, "dnn", hidden=(width,) * 3),
        "SSR-S": match_budget(budget, lambda w: ssr_config(ssr_s, w)),
        "SSR-D": match_budget(budget, lambda w: ssr_config(ssr_d, w)),
    }


def ablation_configs(splits: CTRSplits, plan: DatasetPlan) -> dict[str, CTRConfig]:
    """SSR choices around the plan's defaults, each at DCNv2's budget: views, keep ratio, ICS iterations."""
    budget = dense_params(base_config(splits, plan, "dcnv2"))
    out: dict[str, CTRConfig] = {}
    for flt, tag in (("static", "SSR-S"), ("ics", "SSR-D")):
        for views in (2, 8):
            b = base_config(splits, plan, "ssr", ssr_filter=flt, ssr_views=views)
            out[f"{tag} views={views}"] = match_budget(budget, lambda w, b=b: ssr_config(b, w))
        # keep=1.0 on SSR-S is the no-filter control: every view sees every dimension.
        for keep in (0.25, 0.75, 1.0) if flt == "static" else (0.25, 0.75):
            b = base_config(splits, plan, "ssr", ssr_filter=flt, ssr_keep=keep)
            out[f"{tag} keep={keep}"] = match_budget(budget, lambda w, b=b: ssr_config(b, w))
    for iters in (0, 1, 4):
        b = base_config(splits, plan, "ssr", ssr_filter="ics", ics_iters=iters)
        out[f"SSR-D iters={iters}"] = match_budget(budget, lambda w, b=b: ssr_config(b, w))
    return out


TUNE_DROPOUTS: tuple[float, ...] = (0.0, 0.3, 0.5)
# The deep models' validation AUC sits on a plateau for 5-10 epochs and sometimes takes off after
# it (seen in the scaling and tuning histories); the "long" table re-runs the first table with
# this patience to measure what the default patience of 3 leaves on the table.
LONG_PATIENCE = 10


def tuning_configs(splits: CTRSplits, plan: DatasetPlan) -> dict[str, CTRConfig]:
    """Dropout of the deep models (the table uses the plan's); chosen on validation AUC, same for all."""
    table = table_configs(splits, plan)
    out: dict[str, CTRConfig] = {}
    for name in ("DeepFM", "DCNv2", "SSR-S", "SSR-D"):
        for p in TUNE_DROPOUTS:
            if p != plan.dropout:
                out[f"{name} dropout={p}"] = table[name].with_(dropout=p)
    return out


def chosen_dropouts(dataset: str, root: Path = DEFAULT_ROOT) -> dict[str, float]:
    """Per deep model, the dropout with the best validation AUC among the recorded seed-0 table and tune runs."""
    best: dict[str, tuple[float, float]] = {}
    for r in read_runs(root):
        if r["dataset"] != dataset or r["seed"] != 0 or r.get("kind") not in ("table", "tune"):
            continue
        name = r["model"].split(" ")[0]
        if name in ("DeepFM", "DCNv2", "SSR-S", "SSR-D") and (name not in best or r["valid_AUC"] > best[name][0]):
            best[name] = (r["valid_AUC"], float(r["config"]["dropout"]))
    return {name: p for name, (_, p) in best.items()}


def tuned_configs(splits: CTRSplits, plan: DatasetPlan, root: Path = DEFAULT_ROOT) -> dict[str, CTRConfig]:
    """The table's models with the validation-chosen dropout (:func:`chosen_dropouts`); needs the tune runs."""
    dropouts = chosen_dropouts(splits.name, root)
    if len(dropouts) < 4:
        raise RuntimeError("run --tune (and the table's seed 0) first: no validation choice for every deep model")
    return {
        name: cfg.with_(dropout=dropouts.get(name, cfg.dropout)) for name, cfg in table_configs(splits, plan).items()
    }


def run_one(
    splits: CTRSplits,
    cfg: CTRConfig,
    train_cfg: TrainConfig,
    seed: int,
    show_progress: bool,
    export_dir: Path | None = None,
) -> dict[str, Any]:
    """Train one model on one seed; evaluate raw and calibrated on test; optionally export and check ONNX."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    tc = TrainConfig(**{**train_cfg.to_dict(), "seed": seed})
    with torch_threads(tc.num_threads):
        model = CTRModel(cfg)
        result = fit(model, splits.train, splits.valid, tc, show_progress=show_progress, desc=f"{cfg.label} s{seed}")
        valid_logits = predict_logits(model, splits.valid)
        test_logits = predict_logits(model, splits.test)
    cal = fit_platt(valid_logits, splits.valid.labels)
    p_raw = 1.0 / (1.0 + np.exp(-test_logits.astype(np.float64)))
    p_cal = cal.apply(test_logits)
    y = splits.test.labels
    record: dict[str, Any] = {
        "AUC": roc_auc(y, p_raw),
        "LogLoss": log_loss(y, p_raw),
        "ECE": expected_calibration_error(y, p_raw),
        "LogLoss_cal": log_loss(y, p_cal),
        "ECE_cal": expected_calibration_error(y, p_cal),
        "valid_AUC": result.best_valid_auc,
        "params_total": count_parameters(model)["total"],
        "params_dense": count_parameters(model)["dense"],
        "params_embedding": count_parameters(model)["embedding"],
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 1),
        "stopped": result.stopped,
        "valid_history": result.valid_auc,
        "calibration": cal.to_dict(),
        "config": cfg.to_dict(),
        "train": tc.to_dict(),
    }
    if export_dir is not None:
        record.update(_export_and_check(model, splits, cal, result.best_valid_auc, export_dir))
    return record


def _export_and_check(model: CTRModel, splits: CTRSplits, cal: Any, valid_auc: float, out: Path) -> dict[str, Any]:
    """Export, then score the first 2,000 test rows from their *raw* values (encode_rows + ORT) vs torch."""
    from models.ctr.data import rows_from_frame
    from models.ctr.export import OnnxCTRScorer, benchmark, export_ctr

    export_ctr(model, splits.spec, out, cal, valid_auc=valid_auc, extra_params={"dataset": splits.name})
    scorer = OnnxCTRScorer(out)
    n = min(2000, len(splits.test))
    ids = splits.test.ids[:n]
    numeric = None if splits.test.numeric is None else splits.test.numeric[:n]
    if splits.raw_test is not None:
        p_onnx, _ = scorer.predict_rows(rows_from_frame(splits.raw_test.iloc[:n], splits.spec.names))
    else:
        p_onnx = scorer.predict_encoded(ids, numeric)
    wrapper = CalibratedCTR(model, cal.scale, cal.bias).eval()
    with torch.no_grad():
        p_torch = wrapper(torch.from_numpy(ids), None if numeric is None else torch.from_numpy(numeric)).numpy()
    bench = benchmark(scorer, wrapper, ids, numeric, batch_sizes=(1, 64, 512), repeats=30)
    return {
        "onnx_dir": str(out),
        "onnx_max_abs_diff": float(np.abs(p_onnx - p_torch).max()),
        "onnx_input": "raw rows via encode_rows" if splits.raw_test is not None else "encoded ids",
        "onnx_test_AUC_cal": roc_auc(splits.test.labels[:n], p_onnx),
        "latency": bench,
    }


def read_runs(root: Path = DEFAULT_ROOT) -> list[dict[str, Any]]:
    return read_jsonl(Path(root) / "runs.jsonl")


def append_run(record: dict[str, Any], root: Path = DEFAULT_ROOT) -> None:
    append_jsonl(Path(root) / "runs.jsonl", record)


def run_experiment(
    dataset: str,
    seeds: Sequence[int],
    kind: str = "table",
    root: Path = DEFAULT_ROOT,
    show_progress: bool = True,
    models: Sequence[str] | None = None,
    widths: Sequence[int] = SCALING_WIDTHS,
    render: bool = True,
) -> list[dict[str, Any]]:
    """Run a sweep (``kind`` = table | scaling | ablation), appending each finished run to the runs file."""
    plan = PLANS[dataset]
    t0 = time.perf_counter()
    splits = load_splits(dataset)
    log.info(
        "%s: %s rows, %d ids (loaded in %.1fs)",
        dataset,
        splits.meta["rows"],
        splits.spec.n_features,
        time.perf_counter() - t0,
    )
    jobs: list[tuple[str, int | None, CTRConfig]] = []
    if kind == "table":
        jobs = [(name, None, cfg) for name, cfg in table_configs(splits, plan).items()]
    elif kind == "scaling":
        for w in widths:
            jobs += [(name, w, cfg) for name, cfg in scaling_configs(splits, plan, w).items()]
    elif kind == "ablation":
        jobs = [(name, None, cfg) for name, cfg in ablation_configs(splits, plan).items()]
    elif kind == "long":
        jobs = [(name, None, cfg) for name, cfg in table_configs(splits, plan).items()]
        plan = replace(plan, train=replace(plan.train, patience=LONG_PATIENCE))
    elif kind == "tuned":
        jobs = [(name, None, cfg) for name, cfg in tuned_configs(splits, plan, root).items()]
    elif kind == "tune":
        jobs = [(name, None, cfg) for name, cfg in tuning_configs(splits, plan).items()]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if models:
        jobs = [j for j in jobs if j[0] in models or j[0].split(" ")[0] in models]
    done = []
    total = len(jobs) * len(seeds)
    i = 0
    for seed in seeds:
        for name, width, cfg in jobs:
            i += 1
            export_dir = None
            if kind in ("table", "tuned") and plan.export and seed == seeds[0]:
                export_dir = Path(root) / dataset / ("artifacts" if kind == "table" else "artifacts-tuned") / name
            log.info(
                "[%d/%d] %s %s%s seed %d: dense params %d",
                i,
                total,
                kind,
                name,
                f" width {width}" if width else "",
                seed,
                dense_params(cfg),
            )
            record = run_one(splits, cfg, plan.train, seed, show_progress, export_dir)
            record.update(
                {
                    "dataset": dataset,
                    "kind": kind,
                    "model": name,
                    "width": width,
                    "seed": seed,
                    "plan": plan.to_dict(),
                    "data": {k: v for k, v in splits.meta.items() if k != "test_p_click"},
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            )
            append_run(record, root)
            done.append(record)
            log.info(
                "    test AUC %.4f LogLoss %.4f (valid AUC %.4f, %d epochs, %.0fs)",
                record["AUC"],
                record["LogLoss"],
                record["valid_AUC"],
                record["epochs"],
                record["seconds"],
            )
            if render:
                _render(root)
    return done


def _render(root: Path) -> None:
    """The results doc for the default run store; a private ``--root`` gets its own copy inside it."""
    from models.ctr.report import DOC_JSON, DOC_MD, DOC_PNG, render

    if Path(root).resolve() == DEFAULT_ROOT.resolve():
        render(root)
    else:
        out = Path(root)
        render(root, out / DOC_MD.name, out / DOC_JSON.name, out / DOC_PNG.name)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="frappe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scaling", action="store_true", help="the scaling curve instead of the model table")
    parser.add_argument("--ablation", action="store_true", help="SSR views / keep ratio / ICS iterations")
    parser.add_argument("--tune", action="store_true", help="dropout of the deep models, on validation AUC")
    parser.add_argument("--tuned", action="store_true", help="the model table again with the tuned dropouts")
    parser.add_argument("--long", action="store_true", help="the model table again with early-stop patience 10")
    parser.add_argument("--models", nargs="+", default=None, help="only these models (table or scaling names)")
    parser.add_argument("--widths", type=int, nargs="+", default=list(SCALING_WIDTHS))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="re-render the doc from the runs file")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.render_only:
        _render(args.root)
        return
    kind = (
        "scaling"
        if args.scaling
        else "ablation"
        if args.ablation
        else "tune"
        if args.tune
        else "tuned"
        if args.tuned
        else "long"
        if args.long
        else "table"
    )
    run_experiment(
        args.dataset,
        args.seeds,
        kind=kind,
        root=args.root,
        show_progress=not args.no_progress,
        models=args.models,
        widths=args.widths,
    )


if __name__ == "__main__":
    main()
