"""Train a sequential model on an existing feature store and export a servable artifact (the demo's path).

Unlike ``experiment.py`` (which builds its own leak-free train/test LTE versions per dataset), this
trains against versions that already exist -- e.g. the demo's ``lte_avg@v1`` and ``recent_items@v1``
-- and pins them. That is sound for training because the point-in-time join gives every example the
snapshot at or before its own time, and a snapshot only contains events older than its as-of minus
the lag: a version built over all the data still never shows an example its own future.

The held-out metric is leave-one-out on the last event per user (the rest is training data), with
the same rules as the evaluation harness, on a sample of users to keep the demo quick.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_store.config import FeatureStoreSettings
from models.eval.baselines import Popularity
from models.eval.harness import evaluate
from models.eval.split import leave_one_out
from models.sequential.data import LagPolicy, attach_lte, query_inputs, training_chunks
from models.sequential.export import export_model
from models.sequential.model import VARIANTS, SASRec, SASRecConfig
from models.sequential.train import TrainConfig, fit, score_examples

log = logging.getLogger(__name__)


def _latest_ref(settings: FeatureStoreSettings, view: str) -> str | None:
    from feature_store.versions import VersionCatalog

    catalog = VersionCatalog(settings.catalog_dir)
    numbers = catalog.version_numbers(view) if view in catalog.views() else []
    return f"{view}@v{max(numbers)}" if numbers else None


def train_and_export(
    settings: FeatureStoreSettings,
    dataset: str,
    variant: str,
    epochs: int,
    seed: int,
    out_dir: Path,
    lte_ref: str | None = None,
    recent_ref: str | None = None,
    *,
    max_len: int = 50,
    hidden: int = 64,
    max_chunks_per_user: int | None = 3,
    eval_users: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    top_k: int = 100,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Train on the prepared ``dataset`` of ``settings`` with LTEs from ``lte_ref`` and export to ``out_dir``.

    Returns ``artifact_dir``, ``metrics`` (held-out HR/NDCG of the model and of popularity),
    ``feature_refs`` (the pinned LTE ref and the recent-items ref the service must read),
    ``params`` (what ``params.json`` holds) and ``training`` (dataset, data id, time window,
    examples, seconds), ready for the model registry. ``lte_ref`` / ``recent_ref`` default to
    the newest version of ``lte_<variant>`` / ``recent_items``. ``max_chunks_per_user`` keeps
    only each user's most recent training chunks, so the 10k-user demo trains in well under a minute.
    """
    from feature_store.sources.prepared import load_prepared
    from feature_store.versions import VersionCatalog

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    catalog = VersionCatalog(settings.catalog_dir)
    ds = load_prepared(settings, dataset)
    split = leave_one_out(ds.interactions, dataset)
    n = len(split)
    recent_ref = recent_ref or _latest_ref(settings, "recent_items")
    if recent_ref is not None:
        recent_max = catalog.resolve(recent_ref).params.get("max_len")
        if isinstance(recent_max, int) and recent_max < max_len:
            max_len = recent_max  # the service can never give the model more items than the feature holds
    if variant == "none":
        lte_ref = None
        policy = LagPolicy.none()
        lte_dim = None
        basis = None
    else:
        lte_ref = lte_ref or _latest_ref(settings, f"lte_{variant}")
        if lte_ref is None:
            raise ValueError(f"variant {variant!r} needs an LTE version (lte_{variant}@vN); build one first")
        spec = catalog.resolve(lte_ref)
        policy = LagPolicy.from_spec(spec)
        lte_dim = next(f.length for f in spec.fields if f.name == "lte")
        basis = spec.basis_fingerprint

    # Training history = everything but each user's last event (held out for the metric).
    hist = [s[:-1] for s in split.sequences]
    hist_ts = [t[:-1] for t in split.timestamps]
    train = training_chunks(hist, hist_ts, max_len, policy, prefix=policy.has_lte, max_per_user=max_chunks_per_user)
    rng = np.random.default_rng(seed)
    eval_rows = np.arange(n) if n <= eval_users else np.sort(rng.choice(n, eval_users, replace=False))
    test_ts = np.array([split.target_time(int(i), "test") for i in eval_rows], dtype=np.int64)
    test = query_inputs(
        [split.test_input(int(i)) for i in eval_rows],
        [split.timestamps[int(i)][:-1] for i in eval_rows],
        test_ts,
        split.targets(eval_rows, "test"),
        max_len,
        policy,
    )
    join_stats: dict[str, Any] = {}
    if policy.has_lte:
        from feature_store import feast_ops

        assert lte_ref is not None
        store = feast_ops.get_store(settings)
        t1 = time.perf_counter()
        join_stats["train"] = attach_lte(train, settings, lte_ref, split.users, store)
        join_stats["test"] = attach_lte(test, settings, lte_ref, split.users[eval_rows], store)
        join_stats["join_seconds"] = round(time.perf_counter() - t1, 1)

    cfg = SASRecConfig(n_items=split.n_items, max_len=max_len, hidden=hidden, lte_dim=lte_dim, variant=variant)
    model = SASRec(cfg)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    result = fit(model, train, tcfg, show_progress=show_progress)

    def score(split_: Any, rows: np.ndarray, which: str) -> np.ndarray:
        pos = np.searchsorted(eval_rows, rows)
        return score_examples(model, test, pos)

    model_m = evaluate(score, split, "test", ks=(10, 100), users=eval_rows, progress=False)
    pop_m = evaluate(Popularity().fit(split), split, "test", ks=(10, 100), users=eval_rows, progress=False)
    metrics = {k: float(v) for k, v in model_m.items() if k != "users"}
    metrics.update({f"popularity_{k}": float(v) for k, v in pop_m.items() if k.startswith(("HR@", "NDCG@"))})
    metrics["eval_users"] = float(len(eval_rows))

    feature_refs = [r for r in (lte_ref, recent_ref) if r is not None]
    params: dict[str, Any] = {
        "dataset": dataset,
        "lag_seconds": policy.lag_seconds,
        "lte_as_of": None if policy.as_of_us is None else policy.as_of_us / 1e6,
        "lte_ref": lte_ref,
        "recent_ref": recent_ref,
        "feature_refs": feature_refs,
        "basis_fingerprint": basis,
        "seed": seed,
        "train_config": tcfg.to_dict(),
    }
    export_model(model, out_dir, split.item_ids.tolist(), params=params, top_k=top_k)
    written = json.loads((Path(out_dir) / "params.json").read_text())
    manifest = ds.meta.get("manifest", {})
    all_ts = np.concatenate(hist_ts) if hist_ts else np.zeros(0, dtype=np.int64)
    training = {
        "dataset": dataset,
        "data_id": manifest.get("data_id") if isinstance(manifest, dict) else None,
        "start": _iso(all_ts.min()) if len(all_ts) else None,
        "end": _iso(all_ts.max()) if len(all_ts) else None,
        "examples": len(train),
        "epochs": result.epochs_run,
        "loss_history": result.losses,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "lte_join": join_stats,
        "held_out": "last event per user (leave-one-out test), seen items excluded",
    }
    return {
        "artifact_dir": str(out_dir),
        "metrics": metrics,
        "feature_refs": feature_refs,
        "params": written,
        "training": training,
    }


def _iso(unix_seconds: int) -> str:
    import pandas as pd

    return pd.Timestamp(int(unix_seconds), unit="s", tz="UTC").isoformat()
