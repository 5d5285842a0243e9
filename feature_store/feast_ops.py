"""Feast operations: apply the catalog, materialize a version online, point-in-time training data.

All Feast imports happen here (and in feast_defs); the serving path never imports this module.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from feature_store.config import FeatureStoreSettings
from feature_store.online.base import default_value
from feature_store.retention import NoPins, PinSource, check_deletable
from feature_store.versions import FeatureStoreError, VersionCatalog, VersionStatus, parse_ref

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


def get_store(settings: FeatureStoreSettings) -> FeatureStore:
    from feast import FeatureStore

    from feature_store.feast_defs import repo_config

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings))


def apply(settings: FeatureStoreSettings, store: FeatureStore | None = None) -> dict[str, list[str]]:
    """Register every active version with Feast and drop views of retired ones (and their online data)."""
    from feast import FeatureService, FeatureView

    from feature_store.feast_defs import build_objects

    store = store or get_store(settings)
    catalog = VersionCatalog(settings.catalog_dir)
    objects = build_objects(catalog, settings.data_dir)
    wanted_views = {o.name for o in objects if isinstance(o, FeatureView)}
    wanted_services = {o.name for o in objects if isinstance(o, FeatureService)}
    stale: list[object] = [fv for fv in store.list_feature_views() if fv.name not in wanted_views]
    stale += [fs for fs in store.list_feature_services() if fs.name not in wanted_services]
    store.apply(objects, objects_to_delete=stale, partial=False)
    if settings.online_store == "sqlite" and settings.sqlite_path.exists():
        # WAL: readers of the live version never wait while a new version is being written.
        with sqlite3.connect(settings.sqlite_path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    return {"applied": sorted(wanted_views), "removed": sorted(o.name for o in stale)}  # type: ignore[attr-defined]


def materialize(settings: FeatureStoreSettings, ref: str, store: FeatureStore | None = None) -> VersionStatus:
    """Load the latest row per entity of one version into the online store.

    Only this version's Feast view is written, so reads of any other version carry on
    untouched (and, unlike Feast's own versioning, nothing refuses reads meanwhile: #6780).
    """
    store = store or get_store(settings)
    catalog = VersionCatalog(settings.catalog_dir)
    view, num, _ = parse_ref(ref)
    spec = catalog.get(view, num)
    if catalog.status(view, num).state == "retired":
        raise FeatureStoreError(f"{ref} is retired; build a new version instead")
    frame = pd.read_parquet(settings.data_dir / spec.source_path, columns=[spec.join_key, "event_timestamp"])
    start = frame["event_timestamp"].min().to_pydatetime() - timedelta(seconds=1)
    end = frame["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    entities = int(frame[spec.join_key].nunique())
    catalog.set_status(view, num, VersionStatus(state="materializing", online_store=settings.online_store))
    t0 = time.perf_counter()
    try:
        store.materialize(start_date=start, end_date=end, feature_views=[spec.feast_name])
    except Exception:
        catalog.set_status(view, num, VersionStatus(state="offline", note="last materialization failed"))
        raise
    status = VersionStatus(
        state="online",
        online_store=settings.online_store,
        materialized_at=datetime.now(UTC),
        online_rows=entities,
        note=f"materialized {entities} entities in {time.perf_counter() - t0:.1f}s",
    )
    catalog.set_status(view, num, status)
    return status


def retire(settings: FeatureStoreSettings, ref: str, pins: PinSource | None = None) -> None:
    """Delete a version's online data and offline parquet, unless a model version pins it.

    The spec JSON stays (marked retired) so the history of what existed is never lost.
    """
    catalog = VersionCatalog(settings.catalog_dir)
    view, num, _ = parse_ref(ref)
    spec = catalog.get(view, num)
    check_deletable(spec.ref, pins or NoPins())
    catalog.set_status(view, num, VersionStatus(state="retired", note="retired by user"))
    apply(settings)
    (settings.data_dir / spec.source_path).unlink(missing_ok=True)


def historical_features(
    settings: FeatureStoreSettings,
    entity_df: pd.DataFrame,
    refs: Sequence[str],
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Point-in-time join of pinned feature versions onto ``entity_df`` through Feast (DuckDB offline store).

    ``entity_df`` has the join key column(s) and ``event_timestamp``. Every input row comes back,
    in input order. Each feature column is named by its ref (``lte_avg@v1:lte``); a row with no
    feature yet gets the documented default and ``<view>@v<N>:present`` = False.
    """
    store = store or get_store(settings)
    catalog = VersionCatalog(settings.catalog_dir)
    df = entity_df.copy()
    # DuckDB rejects nanosecond timestamps; microseconds lose nothing our data has.
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    df["__row"] = np.arange(len(df), dtype=np.int64)
    feast_refs: list[str] = []
    renames: dict[str, str] = {}
    specs = []
    for ref in refs:
        view, num, feature = parse_ref(ref)
        spec = catalog.get(view, num)
        specs.append((spec, feature))
        names = [feature] if feature else [f.name for f in spec.fields]
        for name in names:
            spec.field(name)
            feast_refs.append(f"{spec.feast_name}:{name}")
            renames[f"{spec.feast_name}__{name}"] = f"{spec.ref}:{name}"
    job = store.get_historical_features(entity_df=df, features=feast_refs, full_feature_names=True)
    out = job.to_df()
    if len(out) != len(df):
        raise FeatureStoreError(f"historical retrieval returned {len(out)} rows for {len(df)} input rows")
    out = out.sort_values("__row", kind="stable").reset_index(drop=True).drop(columns="__row")
    out = out.rename(columns=renames)
    for spec, feature in specs:
        names = [feature] if feature else [f.name for f in spec.fields]
        first = f"{spec.ref}:{names[0]}"
        present = out[first].notna().to_numpy()
        out[f"{spec.ref}:present"] = present
        for name in names:
            col = f"{spec.ref}:{name}"
            default = default_value(spec.field(name))
            values = [v if ok else default for v, ok in zip(out[col].tolist(), present, strict=True)]
            # NaN for absent rows made Feast's int columns float; restore the declared type.
            out[col] = pd.Series(values, dtype="int64") if spec.field(name).dtype == "int64" else values
    return out
