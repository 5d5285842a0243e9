"""Writing feature versions: the one place a computed frame becomes an immutable version.

``write_version`` stores the offline parquet and registers the spec; the ``build_*`` functions
compute a frame with a pipeline (LTE, recent items, item features) and call it.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.config import FeatureStoreSettings
from feature_store.versions import (
    ComputationWindow,
    FeatureField,
    FeatureStoreError,
    FeatureVersion,
    VersionCatalog,
    VersionConflict,
    schema_hash,
)

log = logging.getLogger(__name__)

_ARROW = {
    "float_list": pa.list_(pa.float32()),
    "string_list": pa.list_(pa.string()),
    "int64_list": pa.list_(pa.int64()),
    "int64": pa.int64(),
    "double": pa.float64(),
    "string": pa.string(),
}


def _arrow_table(frame: pd.DataFrame, join_key: str, fields: list[FeatureField]) -> pa.Table:
    cols = {
        join_key: pa.array(frame[join_key].astype(str).tolist(), type=pa.string()),
        # Microsecond timestamps: the DuckDB offline store rejects nanoseconds.
        "event_timestamp": pa.array(
            frame["event_timestamp"].astype("datetime64[us, UTC]"), type=pa.timestamp("us", "UTC")
        ),
        "created_timestamp": pa.array(
            frame.get("created_timestamp", frame["event_timestamp"]).astype("datetime64[us, UTC]"),
            type=pa.timestamp("us", "UTC"),
        ),
    }
    for f in fields:
        values = frame[f.name]
        if f.dtype == "float_list":
            values = [np.asarray(v, dtype=np.float32) for v in values]
            if f.length is not None and any(len(v) != f.length for v in values):
                raise FeatureStoreError(f"feature {f.name} must have length {f.length}")
            cols[f.name] = pa.array([v.tolist() for v in values], type=_ARROW[f.dtype])
        else:
            cols[f.name] = pa.array(list(values), type=_ARROW[f.dtype])
    return pa.table(cols)


def write_version(
    settings: FeatureStoreSettings,
    *,
    view: str,
    entity: Literal["user", "item", "creator"],
    frame: pd.DataFrame,
    fields: list[FeatureField],
    window: ComputationWindow,
    dataset: str,
    basis_fingerprint: str | None = None,
    description: str = "",
    params: dict[str, str | int | float | bool | None] | None = None,
) -> FeatureVersion:
    """Store ``frame`` as the next version of ``view`` and register it (offline; not yet online)."""
    catalog = VersionCatalog(settings.catalog_dir)
    join_key = {"user": "user_id", "item": "item_id", "creator": "creator_id"}[entity]
    missing = [c for c in (join_key, "event_timestamp", *(f.name for f in fields)) if c not in frame.columns]
    if missing:
        raise FeatureStoreError(f"frame for {view} lacks columns {missing}")
    table = _arrow_table(frame, join_key, fields)
    for _ in range(5):  # another build may take the same number between read and register
        version = catalog.next_version(view)
        rel = Path("offline") / view / f"v{version}.parquet"
        path = settings.data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        spec = FeatureVersion(
            view=view,
            version=version,
            entity=entity,
            fields=tuple(fields),
            schema_hash=schema_hash(entity, fields),
            basis_fingerprint=basis_fingerprint,
            window=window,
            dataset=dataset,
            source_path=str(rel),
            rows=len(frame),
            created_at=datetime.now(UTC),
            description=description,
            params=params or {},
        )
        try:
            catalog.register(spec)
        except VersionConflict:
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, path)
        log.info("registered %s (%d rows) at %s", spec.ref, len(frame), rel)
        return spec
    raise FeatureStoreError(f"could not allocate a version number for {view}")


def lte_fields(dim: int) -> list[FeatureField]:
    return [FeatureField(name="lte", dtype="float_list", length=dim), FeatureField(name="n_items", dtype="int64")]


def window_of(as_of: datetime, lag: timedelta, window: timedelta, every: timedelta | None, first: datetime | None):
    return ComputationWindow(
        as_of=as_of,
        lag_seconds=lag.total_seconds(),
        window_seconds=window.total_seconds(),
        snapshot_every_seconds=every.total_seconds() if every else None,
        first_snapshot=first,
    )


def utc(ts: datetime | str | pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize(UTC) if t.tzinfo is None else t.tz_convert(UTC)


# --------------------------------------------------------------------------- builds from prepared data


def dataset_basis(settings: FeatureStoreSettings, dataset: str, kind: str = "auto", dim: int = 64):
    """The dataset's semantic basis, built once and then frozen.

    Every LTE version of a dataset is computed in the same basis (same fingerprint), which is
    what lets a model trained on one LTE version read the next. The chosen fingerprint per
    (dataset, kind) is recorded in ``datasets/<name>/bases.json``; later builds reuse it.
    """
    import json

    from feature_store.pipelines.basis import build_attribute_basis, build_text_basis, load_basis, save_basis
    from feature_store.sources.prepared import load_prepared

    index_path = settings.data_dir / "datasets" / dataset / "bases.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    ds = None
    if kind == "auto":
        ds = load_prepared(settings, dataset)
        kind = "text" if (ds.items["text"].str.len() > 0).mean() > 0.5 else "attributes"
    key = f"{kind}:{dim}"
    if key in index:
        return load_basis(settings.basis_dir, index[key])
    ds = ds or load_prepared(settings, dataset)
    if kind == "text":
        basis = build_text_basis(ds.items, dim=dim, cache_dir=settings.data_dir / "encoder_cache")
    elif kind == "attributes":
        basis = build_attribute_basis(ds.items, dim=dim)
    else:
        raise FeatureStoreError(f"unknown basis kind {kind!r}; use text, attributes or auto")
    save_basis(basis, settings.basis_dir)
    index[key] = basis.fingerprint
    index_path.write_text(json.dumps(index, indent=2))
    log.info("froze %s basis %s for %s", kind, basis.fingerprint[:12], dataset)
    return basis


def snapshot_grid(
    first: pd.Timestamp, as_of: pd.Timestamp, every: timedelta, max_snapshots: int | None
) -> list[pd.Timestamp]:
    """As-of times ending at ``as_of`` and going back every ``every`` to the data's start.

    Training examples get the newest snapshot at or before their own time (a point-in-time join),
    so the spacing bounds how stale a training LTE can be; serving uses the last one.
    """
    times = []
    t = as_of
    while t > first and (max_snapshots is None or len(times) < max_snapshots):
        times.append(t)
        t = t - every
    return sorted(times)


def _as_of(ds_interactions: pd.DataFrame, as_of: str | None) -> pd.Timestamp:
    if as_of:
        return utc(as_of)
    # Just after the last event, so the newest snapshot sees all data (minus the lag).
    return utc(ds_interactions["timestamp"].max()) + pd.Timedelta(seconds=1)


def build_lte(
    settings: FeatureStoreSettings,
    *,
    dataset: str,
    variant: str = "avg",
    basis_kind: str = "auto",
    as_of: str | None = None,
    lag_days: float = 7.0,
    window_days: float = 365.0,
    every_days: float = 7.0,
    max_snapshots: int | None = None,
    epochs: int = 5,
    seed: int = 0,
    ae_samples: int = 40_000,
) -> FeatureVersion:
    """A new version of ``lte_avg`` or ``lte_ae`` for a prepared dataset.

    The autoencoder's encoder is shared by all snapshots, so it trains on a sample of
    (user, snapshot) pairs (``ae_samples``) and is then applied to every snapshot.
    """
    from feature_store.pipelines import lte
    from feature_store.sources.prepared import load_prepared

    if variant not in ("avg", "ae"):
        raise FeatureStoreError(f"unknown LTE variant {variant!r}; use avg or ae")
    ds = load_prepared(settings, dataset)
    basis = dataset_basis(settings, dataset, basis_kind)
    t_as_of = _as_of(ds.interactions, as_of)
    inter = ds.interactions[ds.interactions["timestamp"] < t_as_of]
    lag, win, every = timedelta(days=lag_days), timedelta(days=window_days), timedelta(days=every_days)
    grid = snapshot_grid(utc(inter["timestamp"].min()), t_as_of, every, max_snapshots)
    window = lte.LTEWindow(lag=lag, window=win)
    params: dict[str, str | int | float | bool | None] = {"variant": variant, "basis_encoder": basis.encoder}
    if variant == "avg":
        frame = lte.compute_lte_average(inter, basis, window, grid)
        description = "uniform average of basis vectors over the lagged window"
    else:
        model = lte.train_lte_autoencoder(inter, basis, window, grid, epochs=epochs, seed=seed, max_samples=ae_samples)
        frame = lte.compute_lte_autoencoder(model, inter, basis, window, grid)
        enc_dir = (
            settings.data_dir / "lte_encoders" / f"{dataset}-{basis.fingerprint[:12]}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        )
        lte.save_lte_autoencoder(model, enc_dir)
        params["encoder_dir"] = str(enc_dir.relative_to(settings.data_dir))
        params.update(epochs=epochs, seed=seed, ae_samples=ae_samples)
        description = "asymmetric autoencoder: trainable encoder, decoder fixed to the basis"
    manifest = ds.meta.get("manifest", {})
    params["data_id"] = manifest.get("data_id")  # type: ignore[union-attr]
    return write_version(
        settings,
        view=f"lte_{variant}",
        entity="user",
        frame=frame,
        fields=lte_fields(basis.dim),
        window=window_of(t_as_of.to_pydatetime(), lag, win, every, grid[0].to_pydatetime() if grid else None),
        dataset=dataset,
        basis_fingerprint=basis.fingerprint,
        description=description,
        params=params,
    )


RECENT_FIELDS = [
    FeatureField(name="item_ids", dtype="string_list"),
    FeatureField(name="timestamps", dtype="int64_list"),
]


def build_recent(
    settings: FeatureStoreSettings,
    *,
    dataset: str,
    as_of: str | None = None,
    every_days: float = 7.0,
    max_len: int = 50,
    max_snapshots: int | None = None,
) -> FeatureVersion:
    """A new version of ``recent_items``: each user's last ``max_len`` items before each snapshot."""
    from feature_store.pipelines.recent import compute_recent_items
    from feature_store.sources.prepared import load_prepared

    ds = load_prepared(settings, dataset)
    t_as_of = _as_of(ds.interactions, as_of)
    inter = ds.interactions[ds.interactions["timestamp"] < t_as_of]
    every = timedelta(days=every_days)
    grid = snapshot_grid(utc(inter["timestamp"].min()), t_as_of, every, max_snapshots)
    frame = compute_recent_items(inter, grid, max_len=max_len)
    return write_version(
        settings,
        view="recent_items",
        entity="user",
        frame=frame,
        fields=RECENT_FIELDS,
        window=window_of(
            t_as_of.to_pydatetime(), timedelta(0), timedelta(0), every, grid[0].to_pydatetime() if grid else None
        ),
        dataset=dataset,
        description=f"last {max_len} items strictly before each snapshot, most recent last",
        params={"max_len": max_len},
    )


def build_items(settings: FeatureStoreSettings, *, dataset: str, as_of: str | None = None) -> FeatureVersion:
    """A new version of ``item_features``: creator, popularity before as_of, content vector."""
    from feature_store.pipelines.recent import compute_item_features
    from feature_store.sources.prepared import load_prepared

    ds = load_prepared(settings, dataset)
    basis = dataset_basis(settings, dataset, "auto")
    t_as_of = _as_of(ds.interactions, as_of)
    frame = compute_item_features(ds.items, ds.interactions, basis, [t_as_of])
    fields = [
        FeatureField(name="creator_id", dtype="string"),
        FeatureField(name="popularity", dtype="int64"),
        FeatureField(name="content", dtype="float_list", length=basis.dim),
    ]
    return write_version(
        settings,
        view="item_features",
        entity="item",
        frame=frame,
        fields=fields,
        window=window_of(t_as_of.to_pydatetime(), timedelta(0), timedelta(0), None, None),
        dataset=dataset,
        basis_fingerprint=basis.fingerprint,
        description="creator, interactions before as_of, content vector in the dataset's basis",
    )


def build_purchase_history(
    settings: FeatureStoreSettings,
    *,
    dataset: str,
    as_of: str | None = None,
    every_days: float = 7.0,
    history_days: int | None = None,
    max_pairs: int | None = None,
    max_snapshots: int | None = None,
    basket_pattern: str | None = "auto",
    show_progress: bool = True,
) -> FeatureVersion:
    """A new version of ``purchase_history``: each user's (item, purchase day) pairs before each snapshot.

    Purchases are the prepared dataset's basket lines (``basket_pattern`` "auto": the shopping trips
    on synthetic data, every line elsewhere; None: every line) plus every purchase recorded since
    with ``record_purchases`` (the dataset's purchase log). Days are UTC day numbers (days since
    1970-01-01). See feature_store/pipelines/purchases.py for what a row keeps.
    """
    from feature_store.pipelines import purchases as ph
    from feature_store.sources.prepared import load_prepared

    history_days = ph.HISTORY_DAYS if history_days is None else history_days
    max_pairs = ph.MAX_PAIRS if max_pairs is None else max_pairs
    ds = load_prepared(settings, dataset)
    pattern = ph.default_basket_pattern(dataset) if basket_pattern == "auto" else basket_pattern
    lines = ph.purchases(ds.interactions, pattern)[["user_id", "item_id", "timestamp"]]
    recorded = ph.read_purchase_log(settings, dataset)
    if len(recorded):
        lines = pd.concat([lines, recorded], ignore_index=True)
    t_as_of = _as_of(lines, as_of)
    lines = lines[lines["timestamp"] < t_as_of]
    every = timedelta(days=every_days)
    grid = snapshot_grid(utc(lines["timestamp"].min()), t_as_of, every, max_snapshots)
    frame = ph.compute_purchase_history(lines, grid, history_days, max_pairs, show_progress=show_progress)
    manifest = ds.meta.get("manifest", {})
    return write_version(
        settings,
        view=ph.VIEW,
        entity="user",
        frame=frame,
        fields=ph.PURCHASE_FIELDS,
        window=window_of(
            t_as_of.to_pydatetime(),
            timedelta(0),
            timedelta(days=history_days),
            every,
            grid[0].to_pydatetime() if grid else None,
        ),
        dataset=dataset,
        description=(
            "per user: distinct (item, UTC day number since 1970-01-01) purchases strictly before each snapshot, "
            f"oldest first; the last {history_days} days in full, older items by their last purchase day, "
            f"at most {max_pairs} pairs"
        ),
        params={
            "history_days": history_days,
            "max_pairs": max_pairs,
            "horizon_days": ph.HORIZON_DAYS,
            "day_epoch": ph.DAY_EPOCH,
            "basket_pattern": pattern,
            "recorded_purchases": len(recorded),
            "data_id": manifest.get("data_id") if isinstance(manifest, dict) else None,
        },
    )
