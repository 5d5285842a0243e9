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
        "event_timestamp": pa.array(frame["event_timestamp"].astype("datetime64[us, UTC]"), type=pa.timestamp("us", "UTC")),
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
