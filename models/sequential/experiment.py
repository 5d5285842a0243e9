"""Evaluation runs of the sequential family: data + LTE versions per dataset, one run per (variant, seed).

Layout under ``root`` (default ``var/experiments/sequential``), one feature-store data dir per dataset
so nothing clashes with the demo or other experiments::

    <root>/<dataset>/              FeatureStoreSettings.data_dir for this dataset
        datasets/<dataset>-train     prepared TRAINING interactions only (valid/test targets removed)
        datasets/<dataset>-trainval  training + validation targets (the history a test query may use)
        catalog/, offline/, ...      LTE versions built from those (lte_avg, lte_ae)
        lte_versions.json            which versions serve training/validation and test, per variant
        cache/*.npz                  model inputs after the point-in-time joins (reused by every seed)
        runs/*.pt                    checkpoints
    <root>/runs.jsonl              one line per finished run (the results doc is rendered from it)

LTE versions (no valid/test target ever enters a version used for training):

* ``train`` version: ``build_lte`` over ``<dataset>-train``; training examples and validation queries
  get their LTE from it, point in time (``data.pit_lte``);
* ``test`` version: the same window rule over ``<dataset>-trainval`` -- for the autoencoder with the
  *same* encoder (the one trained on training data), so the features mean the same thing. A test
  query at time ``T`` reads the snapshot at or before ``T``, which contains only events older than
  that snapshot minus the lag; the test target is never in it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from feature_store.config import REPO_ROOT, FeatureStoreSettings
from models.eval.baselines import Popularity
from models.eval.harness import evaluate
from models.eval.report import append_jsonl, read_jsonl
from models.eval.split import SequenceSplit, leave_one_out
from models.sequential.data import (
    Examples,
    LagPolicy,
    attach_lte,
    load_examples,
    query_inputs,
    save_examples,
    training_chunks,
)
from models.sequential.model import VARIANTS, SASRec, SASRecConfig, load_checkpoint, save_checkpoint
from models.sequential.train import TrainConfig, fit, score_examples

if TYPE_CHECKING:
    from feature_store.sources.schema import Dataset

log = logging.getLogger(__name__)

DEFAULT_ROOT = REPO_ROOT / "var" / "experiments" / "sequential"
DATASETS: tuple[str, ...] = ("synthetic", "ml-latest-small", "ml-1m", "amazon-beauty", "amazon-sports")
KS = (10, 100)


@dataclass(frozen=True)
class DatasetPlan:
    """Per-dataset LTE window and training settings (chosen on validation; see docs/results/sequential.md)."""

    lag_days: float
    window_days: float
    every_days: float
    max_len: int = 50
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    loss: str = "ce"  # "ce" (full softmax) | "sampled" (n_negatives shared uniform negatives)
    n_negatives: int = 1024
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    eval_every: int = 2
    patience: int = 3
    valid_users: int | None = 5000  # validation subset for early stopping (fixed, seed 0)
    max_minutes: float = 60.0
    synthetic_users: int = 2000
    basis_kind: str = "auto"  # text when items have text (MovieLens titles, synthetic), else attributes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PLANS: dict[str, DatasetPlan] = {
    # Real timestamps: the lag is wall-clock time (sequence lengths vary with burstiness).
    "synthetic": DatasetPlan(lag_days=7, window_days=365, every_days=7, epochs=60),
    # Time caps: 36 fits (4 datasets x 3 variants x 3 seeds) share two CPU cores; every variant of a
    # dataset gets the same cap, so the comparison stays fair (the report shows where it bit).
    "ml-latest-small": DatasetPlan(lag_days=1, window_days=365, every_days=7, max_minutes=3),
    "ml-1m": DatasetPlan(lag_days=1, window_days=365, every_days=7, max_minutes=4),
    # Order-only: day k = k-th event, so lag = n days means "the sequence is the last n items".
    "amazon-beauty": DatasetPlan(lag_days=10, window_days=32, every_days=1, dropout=0.5, max_minutes=4),
    "amazon-sports": DatasetPlan(lag_days=10, window_days=32, every_days=1, dropout=0.5, max_minutes=4),
}


def settings_for(dataset: str, root: Path = DEFAULT_ROOT) -> FeatureStoreSettings:
    """A private feature-store data dir (and Feast project) per dataset."""
    project = "seq_" + "".join(c if c.isalnum() else "_" for c in dataset)
    # Absolute: Feast resolves relative paths against its repo directory, not the working directory.
    return FeatureStoreSettings(data_dir=Path(root).resolve() / dataset, project=project)


def load_source_dataset(dataset: str, settings: FeatureStoreSettings, plan: DatasetPlan) -> Dataset:
    from feature_store.sources.prepared import load_source

    return load_source(dataset, settings, users=plan.synthetic_users if dataset == "synthetic" else None)


def split_masks(interactions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row masks ``(train, trainval)`` that agree with :func:`leave_one_out`'s cut points.

    Same ordering rule as the split (stable by timestamp, then original row order, per user):
    the last event of a user with >= 3 events is the test target, the one before the validation
    target. Users with fewer events are not evaluated; their events stay (they are no one's target).
    """
    ts = pd.to_datetime(interactions["timestamp"], utc=True).dt.tz_convert(None).to_numpy().astype("datetime64[us]")
    users, _ = pd.factorize(interactions["user_id"].astype(str), sort=True)
    order = np.lexsort((np.arange(len(interactions)), ts.astype(np.int64), users))
    u_sorted = users[order]
    sizes = np.bincount(u_sorted)
    ends = np.cumsum(sizes)
    pos_from_end = np.empty(len(order), dtype=np.int64)
    pos_from_end[order] = ends[u_sorted] - 1 - np.arange(len(order))
    evaluated = sizes[users] >= 3
    train = ~evaluated | (pos_from_end >= 2)
    trainval = ~evaluated | (pos_from_end >= 1)
    return train, trainval


def _whole_second_after(ts: pd.Series) -> str:
    """An as-of just after the last event, on a whole second (so every snapshot is a whole second)."""
    last = pd.to_datetime(ts, utc=True).max()
    return (last.floor("s") + pd.Timedelta(seconds=1)).isoformat()


def build_lte_versions(
    dataset: str, variant: str, plan: DatasetPlan, root: Path = DEFAULT_ROOT, ae_epochs: int = 5
) -> dict[str, str]:
    """Prepare the train/trainval datasets and build this variant's train and test LTE versions (once)."""
    from feature_store import build as builds
    from feature_store import feast_ops
    from feature_store.sources.prepared import DatasetNotPrepared, load_prepared, manifest, prepare
    from feature_store.sources.schema import Dataset

    settings = settings_for(dataset, root)
    state_path = settings.data_dir / "lte_versions.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    key = f"{variant}:lag{plan.lag_days}:win{plan.window_days}:every{plan.every_days}:basis-{plan.basis_kind}"
    if key in state:
        return state[key]
    names = {"train": f"{dataset}-train", "trainval": f"{dataset}-trainval"}
    try:
        manifest(settings, names["trainval"])
    except DatasetNotPrepared:
        ds = load_source_dataset(dataset, settings, plan)
        train, trainval = split_masks(ds.interactions)
        for part, mask in (("train", train), ("trainval", trainval)):
            sub = ds.interactions[mask].reset_index(drop=True)
            prepare(settings, Dataset(name=names[part], interactions=sub, items=ds.items, time_kind=ds.time_kind))
    # One frozen basis for both parts (same items): the test version must be in the training coordinates.
    basis = builds.dataset_basis(settings, names["train"], plan.basis_kind)
    bases_tv = settings.data_dir / "datasets" / names["trainval"] / "bases.json"
    bases_tv.write_text((settings.data_dir / "datasets" / names["train"] / "bases.json").read_text())

    common = dict(lag_days=plan.lag_days, window_days=plan.window_days, every_days=plan.every_days)
    t0 = time.perf_counter()
    train_ds = load_prepared(settings, names["train"])
    spec_train = builds.build_lte(
        settings,
        dataset=names["train"],
        variant=variant,
        basis_kind=plan.basis_kind,
        as_of=_whole_second_after(train_ds.interactions["timestamp"]),
        epochs=ae_epochs,
        **common,  # type: ignore[arg-type]
    )
    tv = load_prepared(settings, names["trainval"])
    as_of_tv = _whole_second_after(tv.interactions["timestamp"])
    if variant == "avg":
        spec_test = builds.build_lte(
            settings, dataset=names["trainval"], variant="avg", basis_kind=plan.basis_kind, as_of=as_of_tv, **common
        )  # type: ignore[arg-type]
    else:
        spec_test = _build_ae_with_encoder(settings, names["trainval"], spec_train, basis, plan, as_of_tv)
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    entry = {
        "train": spec_train.ref,
        "test": spec_test.ref,
        "basis": basis.fingerprint,
        "lte_dim": basis.dim,
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    state[key] = entry
    state_path.write_text(json.dumps(state, indent=2))
    return entry


def _build_ae_with_encoder(settings, dataset_name, spec_train, basis, plan, as_of):  # type: ignore[no-untyped-def]
    """The autoencoder LTE of ``dataset_name`` computed with the encoder of ``spec_train`` (not retrained)."""
    from feature_store import build as builds
    from feature_store.pipelines import lte
    from feature_store.sources.prepared import load_prepared

    ds = load_prepared(settings, dataset_name)
    enc_dir = settings.data_dir / str(spec_train.params["encoder_dir"])
    model = lte.load_lte_autoencoder(enc_dir, basis)
    t_as_of = builds.utc(as_of)
    inter = ds.interactions[ds.interactions["timestamp"] < t_as_of]
    lag, win, every = (timedelta(days=d) for d in (plan.lag_days, plan.window_days, plan.every_days))
    grid = builds.snapshot_grid(builds.utc(inter["timestamp"].min()), t_as_of, every, None)
    frame = lte.compute_lte_autoencoder(model, inter, basis, lte.LTEWindow(lag=lag, window=win), grid)
    params = dict(spec_train.params)
    params["encoder_from"] = spec_train.ref
    params["data_id"] = ds.meta.get("manifest", {}).get("data_id")  # type: ignore[union-attr]
    return builds.write_version(
        settings,
        view="lte_ae",
        entity="user",
        frame=frame,
        fields=builds.lte_fields(basis.dim),
        window=builds.window_of(t_as_of.to_pydatetime(), lag, win, every, grid[0].to_pydatetime()),
        dataset=dataset_name,
        basis_fingerprint=basis.fingerprint,
        description=f"autoencoder LTE with the encoder of {spec_train.ref} (test-time history)",
        params=params,
    )


@dataclass
class PreparedData:
    """Everything a run needs: the split and model inputs for train / valid / test."""

    split: SequenceSplit
    train: Examples
    valid: Examples
    test: Examples
    lte_dim: int | None
    refs: dict[str, Any]
    stats: dict[str, Any]


def _split_parts(split: SequenceSplit) -> dict[str, Any]:
    n = len(split)
    return {
        "train_seq": split.train_sequences(),
        "train_ts": [t[:-2] for t in split.timestamps],
        "valid_ts": np.array([split.target_time(i, "valid") for i in range(n)], dtype=np.int64),
        "test_ts": np.array([split.target_time(i, "test") for i in range(n)], dtype=np.int64),
        "test_hist_ts": [t[:-1] for t in split.timestamps],
    }


def load_split(dataset: str, root: Path = DEFAULT_ROOT, plan: DatasetPlan | None = None) -> SequenceSplit:
    plan = plan or PLANS[dataset]
    settings = settings_for(dataset, root)
    ds = load_source_dataset(dataset, settings, plan)
    return leave_one_out(ds.interactions, dataset)


def prepare_data(
    dataset: str, variant: str, root: Path = DEFAULT_ROOT, plan: DatasetPlan | None = None
) -> PreparedData:
    """Model inputs for a (dataset, variant), cached: the Feast joins run once for all seeds."""
    plan = plan or PLANS[dataset]
    split = load_split(dataset, root, plan)
    settings = settings_for(dataset, root)
    lag_tag = (
        "nolag"
        if variant == "none"
        else f"lag{plan.lag_days}-win{plan.window_days}-every{plan.every_days}-{plan.basis_kind}"
    )
    cache = settings.data_dir / "cache" / f"{variant}-{lag_tag}-L{plan.max_len}.npz"
    if cache.exists():
        parts, meta = load_examples(cache)
        return PreparedData(split, parts["train"], parts["valid"], parts["test"], meta["lte_dim"], meta["refs"], meta)
    t0 = time.perf_counter()
    p = _split_parts(split)
    n = len(split)
    valid_targets = split.targets(np.arange(n), "valid")
    test_targets = split.targets(np.arange(n), "test")
    valid_hist = [split.valid_input(i) for i in range(n)]
    test_hist = [split.test_input(i) for i in range(n)]
    stats: dict[str, Any] = {}
    if variant == "none":
        pol = LagPolicy.none()
        train = training_chunks(p["train_seq"], p["train_ts"], plan.max_len, pol, prefix=False)
        valid = query_inputs(valid_hist, p["train_ts"], p["valid_ts"], valid_targets, plan.max_len, pol)
        test = query_inputs(test_hist, p["test_hist_ts"], p["test_ts"], test_targets, plan.max_len, pol)
        refs: dict[str, Any] = {}
        lte_dim = None
    else:
        from feature_store import feast_ops
        from feature_store.versions import VersionCatalog

        refs = build_lte_versions(dataset, variant, plan, root)
        catalog = VersionCatalog(settings.catalog_dir)
        pol_train = LagPolicy.from_spec(catalog.resolve(refs["train"]))
        pol_test = LagPolicy.from_spec(catalog.resolve(refs["test"]))
        store = feast_ops.get_store(settings)
        train = training_chunks(p["train_seq"], p["train_ts"], plan.max_len, pol_train, prefix=True)
        valid = query_inputs(valid_hist, p["train_ts"], p["valid_ts"], valid_targets, plan.max_len, pol_train)
        test = query_inputs(test_hist, p["test_hist_ts"], p["test_ts"], test_targets, plan.max_len, pol_test)
        for name, ex, ref in (
            ("train", train, refs["train"]),
            ("valid", valid, refs["train"]),
            ("test", test, refs["test"]),
        ):
            t1 = time.perf_counter()
            stats[name] = attach_lte(ex, settings, ref, split.users, store)
            stats[name]["join_seconds"] = round(time.perf_counter() - t1, 1)
        lte_dim = int(refs["lte_dim"])
    for name, ex in (("train", train), ("valid", valid), ("test", test)):
        stats.setdefault(name, {})
        stats[name].setdefault("examples", float(len(ex)))
        stats[name].setdefault("seq_len_mean", float((ex.item_seq != 0).sum(axis=1).mean()) if len(ex) else 0.0)
    meta = {"lte_dim": lte_dim, "refs": refs, "prepare_seconds": round(time.perf_counter() - t0, 1), **stats}
    save_examples(cache, {"train": train, "valid": valid, "test": test}, meta)
    return PreparedData(split, train, valid, test, lte_dim, refs, meta)


def score_fn_for(model: SASRec, inputs: Examples):  # type: ignore[no-untyped-def]
    """A harness ScoreFn over precomputed per-row inputs (row ``i`` of the split = row ``i`` of ``inputs``)."""

    def score(split: SequenceSplit, rows: np.ndarray, which: str) -> np.ndarray:
        return score_examples(model, inputs, rows)

    return score


def popularity_run(split: SequenceSplit) -> dict[str, float]:
    return evaluate(Popularity().fit(split), split, "test", ks=KS, progress=False)


def run_one(
    dataset: str,
    variant: str,
    seed: int,
    root: Path = DEFAULT_ROOT,
    plan: DatasetPlan | None = None,
    data: PreparedData | None = None,
    show_progress: bool = False,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Train one model with early stopping on validation NDCG@10 and evaluate it on test."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    plan = plan or PLANS[dataset]
    if epochs is not None:
        plan = replace(plan, epochs=epochs)
    data = data or prepare_data(dataset, variant, root, plan)
    split = data.split
    torch.manual_seed(seed)
    cfg = SASRecConfig(
        n_items=split.n_items,
        max_len=plan.max_len,
        hidden=plan.hidden,
        n_blocks=plan.n_blocks,
        n_heads=plan.n_heads,
        dropout=plan.dropout,
        lte_dim=data.lte_dim,
        variant=variant,
    )
    model = SASRec(cfg)
    valid_rows = np.arange(len(split))
    if plan.valid_users is not None and len(split) > plan.valid_users:
        valid_rows = np.sort(np.random.default_rng(0).choice(len(split), plan.valid_users, replace=False))
    score_valid = score_fn_for(model, data.valid)

    def valid_fn(m: SASRec) -> float:
        return evaluate(score_valid, split, "valid", ks=(10,), users=valid_rows, progress=False)["NDCG@10"]

    tcfg = TrainConfig(
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=plan.lr,
        loss=plan.loss,
        n_negatives=plan.n_negatives,
        seed=seed,
        eval_every=plan.eval_every,
        patience=plan.patience,
        max_seconds=plan.max_minutes * 60,
    )
    result = fit(model, data.train, tcfg, valid_fn=valid_fn, show_progress=show_progress)
    t0 = time.perf_counter()
    metrics = evaluate(score_fn_for(model, data.test), split, "test", ks=KS, progress=False)
    valid_full = evaluate(score_fn_for(model, data.valid), split, "valid", ks=(10,), progress=False)
    eval_seconds = time.perf_counter() - t0
    ckpt = settings_for(dataset, root).data_dir / "runs" / f"{variant}-s{seed}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, str(ckpt))
    return {
        **metrics,
        "seed": seed,
        "valid_NDCG@10": valid_full["NDCG@10"],
        "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_examples": len(data.train),
        "checkpoint": str(ckpt),
        "model_config": cfg.to_dict(),
        "train_config": tcfg.to_dict(),
        "plan": plan.to_dict(),
        "refs": data.refs,
        "loss_history": [round(v, 4) for v in result.losses],
        "valid_history": [(e, round(v, 5)) for e, v in result.valid],
    }


# ------------------------------------------------------------------------------------------ run store


def runs_path(root: Path = DEFAULT_ROOT) -> Path:
    return Path(root) / "runs.jsonl"


def append_run(record: dict[str, Any], root: Path = DEFAULT_ROOT) -> None:
    append_jsonl(runs_path(root), record)


def read_runs(root: Path = DEFAULT_ROOT) -> list[dict[str, Any]]:
    records = read_jsonl(runs_path(root))
    for r in records:
        # Early records stored the model config under "model", hiding the model name.
        if isinstance(r.get("model"), dict):
            r["model_config"] = r["model"]
            r["model"] = model_name(r["variant"])
    return records


def done(records: list[dict[str, Any]], dataset: str, model: str, seed: int | None = None) -> bool:
    return any(
        r["dataset"] == dataset and r["model"] == model and (seed is None or r.get("seed") == seed) for r in records
    )


def run_dataset(
    dataset: str,
    variants: list[str],
    seeds: list[int],
    root: Path = DEFAULT_ROOT,
    force: bool = False,
    show_progress: bool = False,
    quantize: bool = True,
) -> list[dict[str, Any]]:
    """All missing runs of a dataset (popularity once, each variant x seed), appended to the run store."""
    torch.set_num_threads(1)
    plan = PLANS[dataset]
    records = [] if force else read_runs(root)
    new: list[dict[str, Any]] = []
    if force or not done(records, dataset, "popularity"):
        split = load_split(dataset, root, plan)
        t0 = time.perf_counter()
        rec = {"dataset": dataset, "model": "popularity", "seed": 0, **popularity_run(split)}
        rec["train_seconds"] = round(time.perf_counter() - t0, 1)
        append_run(rec, root)
        new.append(rec)
    for variant in variants:
        name = model_name(variant)
        todo = [s for s in seeds if force or not done(records, dataset, name, s)]
        if not todo:
            continue
        data = prepare_data(dataset, variant, root, plan)
        for seed in todo:
            log.info("run %s %s seed %d", dataset, variant, seed)
            rec = {
                "dataset": dataset,
                "model": name,
                "variant": variant,
                **run_one(dataset, variant, seed, root, plan, data, show_progress),
            }
            rec["prepare"] = {k: v for k, v in data.stats.items() if k != "refs"}
            append_run(rec, root)
            new.append(rec)
            if quantize and seed == min(seeds):
                qrec = quantization_delta(dataset, variant, rec["checkpoint"], data, root)
                append_run(qrec, root)
                new.append(qrec)
    return new


def model_name(variant: str) -> str:
    return {"none": "SASRec", "avg": "SASRec+LTE(avg)", "ae": "SASRec+LTE(ae)"}[variant]


def quantization_delta(
    dataset: str, variant: str, checkpoint: str, data: PreparedData, root: Path = DEFAULT_ROOT
) -> dict[str, Any]:
    """Export a checkpoint to ONNX (FP32 and dynamic INT8) and measure both on the test split.

    The ONNX graph returns the top 100 only, so the harness gets those scores and ``-inf`` elsewhere:
    HR/NDCG at k <= 100 are exact (targets outside the top 100 are misses either way).
    """
    from models.sequential.export import OnnxRecommender, export_model, quantize_int8

    model = load_checkpoint(checkpoint)
    out = settings_for(dataset, root).data_dir / "onnx" / f"{variant}-{Path(checkpoint).stem}"
    export_model(model, out, item_ids=data.split.item_ids.tolist(), params={"dataset": dataset})
    quantize_int8(out)
    split = data.split
    rec: dict[str, Any] = {"dataset": dataset, "model": model_name(variant), "kind": "onnx", "variant": variant}
    inputs = data.test
    for label, fname in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        rec_model = OnnxRecommender(out, onnx_file=fname)

        def score(split: SequenceSplit, rows: np.ndarray, which: str, r: OnnxRecommender = rec_model) -> np.ndarray:
            hist = [split.test_input(int(i)) for i in rows]
            lte = None if inputs.lte is None else inputs.lte[rows]
            return r.dense_scores(inputs.item_seq[rows], lte, hist, split.n_items)

        t0 = time.perf_counter()
        m = evaluate(score, split, "test", ks=KS, progress=False)
        rec[label] = {**m, "seconds": round(time.perf_counter() - t0, 1)}
        rec[f"{label}_bytes"] = sum(p.stat().st_size for p in out.glob(fname + "*"))
    torch_m = evaluate(score_fn_for(model, data.test), split, "test", ks=KS, progress=False)
    rec["torch"] = torch_m
    rec["delta_NDCG@10_int8_vs_fp32"] = rec["int8"]["NDCG@10"] - rec["fp32"]["NDCG@10"]
    rec["delta_NDCG@10_fp32_vs_torch"] = rec["fp32"]["NDCG@10"] - torch_m["NDCG@10"]
    return rec


def fmt_seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def finite(v: float) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


TUNE_ROOT = DEFAULT_ROOT.parent / "sequential-tune"


def tune_run(dataset: str, variant: str, overrides: dict[str, Any], root: Path = TUNE_ROOT) -> dict[str, Any]:
    """One seed-0 run with plan overrides, for choosing settings on *validation*; appended to ``tune.jsonl``."""
    torch.set_num_threads(1)
    plan = replace(PLANS[dataset], **overrides)
    data = prepare_data(dataset, variant, root, plan)
    rec = run_one(dataset, variant, 0, root, plan, data)
    keep = ("valid_NDCG@10", "HR@10", "NDCG@10", "NDCG@100", "train_seconds", "epochs_run", "best_epoch", "stopped")
    row = {"dataset": dataset, "variant": variant, "kw": overrides, **{k: rec[k] for k in keep}}
    row["train_examples"] = rec["train_examples"]
    row["valid_history"] = rec["valid_history"]
    append_jsonl(Path(root) / "tune.jsonl", row)
    return row
