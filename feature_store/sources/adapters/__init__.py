"""Adapters from each shared dataset to the canonical format, and the registry that names them.

    from feature_store.sources.adapters import load_dataset
    ds = load_dataset("ml-latest-small")                       # root from RECSYS_DATASETS_ROOT
    ds = load_dataset("groceries", on_bad_rows="skip")          # drop malformed rows, see ds.meta["load_reports"]

Every loader reads from the datasets root (``FeatureStoreSettings().datasets_root`` unless a root
is passed) and returns a validated ``schema.Dataset``. The data themselves never enter the
project; see docs/data-format.md for how each dataset maps onto the canonical columns.
"""

from __future__ import annotations

from pathlib import Path

from feature_store.sources.adapters._common import DatasetLoader
from feature_store.sources.adapters.amazon import cdr_loaders, load_musical_instruments, s3rec_loaders
from feature_store.sources.adapters.baskets import load_groceries, load_tafeng
from feature_store.sources.adapters.ctr import load_criteo, load_frappe
from feature_store.sources.adapters.movielens import load_ml_1m, load_ml_latest_small
from feature_store.sources.adapters.music import load_lastfm_1k_sample, load_lastfm_2k, load_mpd_sample
from feature_store.sources.adapters.sessions import load_diginetica, load_yoochoose
from feature_store.sources.loading import BadRowPolicy, check_policy
from feature_store.sources.schema import Dataset

DATASETS: dict[str, DatasetLoader] = {
    "ml-latest-small": load_ml_latest_small,
    "ml-1m": load_ml_1m,
    **s3rec_loaders(),
    "amazon-musical-instruments": load_musical_instruments,
    **cdr_loaders(),
    "groceries": load_groceries,
    "tafeng": load_tafeng,
    "frappe": load_frappe,
    "criteo": load_criteo,
    "lastfm-2k": load_lastfm_2k,
    "lastfm-1k-sample": load_lastfm_1k_sample,
    "mpd-sample": load_mpd_sample,
    "yoochoose-100k": load_yoochoose,
    "diginetica-sample": load_diginetica,
}


def list_datasets() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(DATASETS)


def default_datasets_root() -> Path:
    """The configured root (``RECSYS_DATASETS_ROOT``); imported lazily to keep this module light."""
    from feature_store.config import FeatureStoreSettings

    return FeatureStoreSettings().datasets_root


def load_dataset(name: str, root: Path | None = None, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Load one registered dataset into canonical form.

    Raises ValueError for an unknown name, DatasetNotFoundError when its files are missing under
    ``root``, and MalformedRowError at the first bad row unless ``on_bad_rows="skip"``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    policy = check_policy(on_bad_rows)
    return DATASETS[name](Path(root) if root is not None else default_datasets_root(), policy)


__all__ = ["DATASETS", "DatasetLoader", "default_datasets_root", "list_datasets", "load_dataset"]
