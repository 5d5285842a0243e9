"""Train a servable CTR ranker on the demo's world, against feature versions that already exist.

The demo has no logged impressions, so they are generated (feature_store/sources/synthetic_ctr.py)
over the demo's own users and items: clicks follow the users' real tastes, the items' creators and
the request context. The model's fields then come from where the service will find them
(``field_sources``, models/ctr/features.py):

* ``user_id``, ``item_id``: the request;
* ``top_topic``, ``activity``: ``user_profile@vN`` (one snapshot at the feature as-of);
* ``creator_id``, ``popularity_band``: ``item_features@vN`` (same);
* ``hour_bucket``, ``weekday``, ``device``, ``surface``: the request's context.

Impressions are taken to happen after the feature versions' as-of, so joining the single snapshot
is exactly what serving sees: point-in-time correct by construction. The split is random
(fit 70% / validation 10% / test 20%); validation drives early stopping and Platt calibration,
test is reported once, next to the generator's own click probability (the best AUC possible).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.config import FeatureStoreSettings
from feature_store.sources.schema import Dataset
from models.ctr.features import transform

log = logging.getLogger(__name__)

CONTEXT_FIELDS = ("hour_bucket", "weekday", "device", "surface")
CHECKPOINT_FILE = "model.pt"  # torch weights + config + calibration, beside the served model.onnx


def field_sources(profile_ref: str, items_ref: str) -> dict[str, str]:
    return {
        "user_id": "request:user_id",
        "item_id": "request:item_id",
        "top_topic": f"{profile_ref}:top_topic",
        "activity": f"{profile_ref}:activity",
        "creator_id": f"{items_ref}:creator_id",
        "popularity_band": f"{items_ref}:popularity|log2_band",
        **{f: f"context:{f}" for f in CONTEXT_FIELDS},
    }


def _snapshot(settings: FeatureStoreSettings, ref: str, columns: list[str]) -> pd.DataFrame:
    """The newest snapshot of a version's offline rows (what was materialized online)."""
    from feature_store.versions import VersionCatalog

    spec = VersionCatalog(settings.catalog_dir).resolve(ref)
    frame = pd.read_parquet(settings.data_dir / spec.source_path, columns=[spec.join_key, "event_timestamp", *columns])
    newest = frame["event_timestamp"].max()
    return frame[frame["event_timestamp"] == newest].drop(columns="event_timestamp").set_index(spec.join_key)


def training_frame(
    settings: FeatureStoreSettings, world: Dataset, profile_ref: str, items_ref: str, n_impressions: int, seed: int
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Impressions over ``world`` with every model field assembled from its serving source."""
    from feature_store.sources.synthetic_ctr import LABEL, SyntheticCTRConfig, generate_ctr

    sources = field_sources(profile_ref, items_ref)
    imp = generate_ctr(SyntheticCTRConfig(n_impressions=n_impressions, seed=seed), world=world)
    profile = _snapshot(settings, profile_ref, ["top_topic", "activity"])
    items = _snapshot(settings, items_ref, ["creator_id", "popularity"])
    frame = pd.DataFrame({"user_id": imp["user_id"].astype(str), "item_id": imp["item_id"].astype(str)})
    users, item_ids = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    # Absent rows stay None, exactly as the service passes an entity the online store lacks.
    frame["top_topic"] = profile["top_topic"].reindex(users).to_numpy(dtype=object)
    frame["activity"] = profile["activity"].reindex(users).to_numpy(dtype=object)
    frame["creator_id"] = items["creator_id"].reindex(item_ids).to_numpy(dtype=object)
    pop = items["popularity"].reindex(item_ids).to_numpy(dtype=object)
    frame["popularity_band"] = [None if p is None or pd.isna(p) else transform("log2_band", p) for p in pop]
    for f in CONTEXT_FIELDS:
        frame[f] = imp[f].to_numpy(dtype=object)
    frame[LABEL] = imp[LABEL].to_numpy()
    frame["p_click"] = imp["p_click"].to_numpy()
    return frame, sources


def train_and_export(
    settings: FeatureStoreSettings,
    world: Dataset,
    profile_ref: str,
    items_ref: str,
    out_dir: Path,
    *,
    n_impressions: int = 200_000,
    seed: int = 0,
    epochs: int = 8,
    max_seconds: float = 60.0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Generate impressions, train SSR-S, calibrate on validation, export ONNX with its field sources."""
    from feature_store.sources.synthetic_ctr import LABEL
    from models.ctr.calibrate import fit_platt
    from models.ctr.data import splits_from_frames
    from models.ctr.export import export_ctr
    from models.ctr.metrics import log_loss, roc_auc
    from models.ctr.model import CTRConfig, CTRModel, count_parameters, save_checkpoint
    from models.ctr.train import TrainConfig, fit, predict_logits

    t0 = time.perf_counter()
    frame, sources = training_frame(settings, world, profile_ref, items_ref, n_impressions, seed)
    perm = np.random.default_rng(seed).permutation(len(frame))
    n_test, n_valid = len(frame) // 5, len(frame) // 10
    test, valid = frame.iloc[perm[:n_test]], frame.iloc[perm[n_test : n_test + n_valid]]
    fit_rows = frame.iloc[perm[n_test + n_valid :]]
    fields = list(sources)
    splits = splits_from_frames("synthetic-demo", fit_rows, valid, test, fields, label=LABEL)
    cfg = CTRConfig(
        n_categorical=len(fields),
        n_features=splits.spec.n_features,
        model="ssr",
        ssr_filter="static",
        ssr_hidden=256,
    )
    model = CTRModel(cfg)
    result = fit(
        model,
        splits.train,
        splits.valid,
        TrainConfig(epochs=epochs, batch_size=2048, lr=2e-3, seed=seed, max_seconds=max_seconds, patience=2),
        show_progress=show_progress,
        desc="ctr SSR-S",
    )
    calibration = fit_platt(predict_logits(model, splits.valid), splits.valid.labels)
    test_p = calibration.apply(predict_logits(model, splits.test))
    metrics = {
        "test_AUC": roc_auc(splits.test.labels, test_p),
        "test_LogLoss": log_loss(splits.test.labels, test_p),
        "oracle_test_AUC": roc_auc(splits.test.labels, test["p_click"].to_numpy()),
        "valid_AUC": float(result.best_valid_auc),
    }
    refs = [profile_ref, items_ref]
    export_ctr(
        model,
        splits.spec,
        out_dir,
        calibration=calibration,
        valid_auc=float(result.best_valid_auc),
        extra_params={"field_sources": sources, "context_fields": list(CONTEXT_FIELDS)},
    )
    # The torch weights too: the served graph is the ONNX file; the checkpoint lets a benchmark compare
    # it with torch eager on the same model (loadtests/bench_ctr.py) and a later job fine-tune it.
    save_checkpoint(model, Path(out_dir) / CHECKPOINT_FILE, {"calibration": calibration.to_dict()})
    log.info("ctr model trained in %.0fs: %s", time.perf_counter() - t0, metrics)
    return {
        "artifact_dir": str(out_dir),
        "feature_refs": refs,
        "metrics": metrics,
        "params": {"variant": "SSR-S", "parameters": count_parameters(model), "field_sources": sources},
        "training": {
            "dataset": world.name,
            "impressions": len(frame),
            "split": "random 70/10/20 (fit/valid/test)",
            "seed": seed,
            "epochs_run": result.epochs_run,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }
