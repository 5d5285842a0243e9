"""Prepared datasets: a dataset loaded once into canonical parquet under the data dir.

Builds read prepared data, so a feature version records exactly which data it came from
(``dataset`` + the prepared data's content id) and never re-parses the raw files.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from feature_store.config import FeatureStoreSettings
from feature_store.sources.schema import Dataset, validate_interactions, validate_items


class DatasetNotPrepared(FileNotFoundError):
    pass


def _dir(settings: FeatureStoreSettings, name: str) -> Path:
    return settings.data_dir / "datasets" / name


def load_source(
    name: str,
    settings: FeatureStoreSettings,
    *,
    users: int | None = None,
    seed: int = 0,
    on_bad_rows: Literal["error", "skip"] = "error",
) -> Dataset:
    """The synthetic generator or a real-dataset adapter, by name."""
    if name == "synthetic":
        from feature_store.sources.synthetic import SyntheticConfig, generate

        cfg = SyntheticConfig(seed=seed) if users is None else SyntheticConfig(n_users=users, seed=seed)
        return generate(cfg)
    from feature_store.sources.adapters import load_dataset

    return load_dataset(name, root=settings.datasets_root, on_bad_rows=on_bad_rows)


def prepare(settings: FeatureStoreSettings, dataset: Dataset) -> dict[str, object]:
    """Write a canonical dataset to parquet; returns its manifest (counts and a content id)."""
    d = _dir(settings, dataset.name)
    d.mkdir(parents=True, exist_ok=True)
    inter = validate_interactions(dataset.interactions)
    split = dataset.meta.get("split")
    if split is not None:
        # Split labels (train/test files of a dataset) travel row-aligned in their own file.
        inter = inter.assign(__split=pd.Series(split, index=inter.index).astype(str).to_numpy())
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    if split is not None:
        inter[["__split"]].rename(columns={"__split": "split"}).to_parquet(d / "split.parquet", index=False)
        inter = inter.drop(columns="__split")
    else:
        (d / "split.parquet").unlink(missing_ok=True)
    items = validate_items(dataset.items)
    inter.to_parquet(d / "interactions.parquet", index=False)
    items.to_parquet(d / "items.parquet", index=False)
    h = hashlib.sha256()
    for f in ("interactions.parquet", "items.parquet"):
        h.update((d / f).read_bytes())
    manifest = {
        "name": dataset.name,
        "time_kind": dataset.time_kind,
        "users": int(inter["user_id"].nunique()),
        "items": len(items),
        "interactions": len(inter),
        "first": inter["timestamp"].min().isoformat(),
        "last": inter["timestamp"].max().isoformat(),
        "data_id": "sha256:" + h.hexdigest()[:16],
        "prepared_at": datetime.now(UTC).isoformat(),
        "skipped_rows": [str(r) for r in dataset.meta.get("load_reports", []) if r.rows_skipped],  # type: ignore[union-attr]
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def manifest(settings: FeatureStoreSettings, name: str) -> dict[str, object]:
    path = _dir(settings, name) / "manifest.json"
    if not path.exists():
        raise DatasetNotPrepared(
            f"dataset {name!r} is not prepared under {settings.data_dir}; run 'recsys data prepare {name}'"
        )
    return json.loads(path.read_text())


def load_prepared(settings: FeatureStoreSettings, name: str) -> Dataset:
    m = manifest(settings, name)
    d = _dir(settings, name)
    inter = pd.read_parquet(d / "interactions.parquet")
    items = pd.read_parquet(d / "items.parquet")
    items["attributes"] = items["attributes"].map(list)
    meta: dict[str, object] = {"manifest": m}
    if (d / "split.parquet").exists():
        meta["split"] = pd.read_parquet(d / "split.parquet")["split"].to_numpy()
    return Dataset(name=name, interactions=inter, items=items, time_kind=m["time_kind"], meta=meta)  # type: ignore[arg-type]


def prepared_names(settings: FeatureStoreSettings) -> list[str]:
    root = settings.data_dir / "datasets"
    return sorted(p.parent.name for p in root.glob("*/manifest.json")) if root.exists() else []
