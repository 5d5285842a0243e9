"""The popularity ranking a model artifact ships as its serving fallback (``popular.json``).

A service answers unknown users, or any user while the online store is unreachable, with the
most popular items among the model's own item index, flagged as a fallback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from feature_store.config import FeatureStoreSettings
from feature_store.sources.prepared import load_prepared


def popularity_order(item_ids: list[str], counts: dict[str, int], limit: int = 1000) -> list[int]:
    """Item indices (into ``item_ids``, index 0 = padding) by descending count, ties by index."""
    c = np.array([counts.get(i, 0) if k > 0 else -1 for k, i in enumerate(item_ids)], dtype=np.int64)
    order = np.lexsort((np.arange(len(c)), -c))
    return [int(i) for i in order if i > 0][:limit]


def write_popularity(settings: FeatureStoreSettings, dataset: str, artifact_dir: Path, limit: int = 1000) -> Path:
    item_ids = json.loads((artifact_dir / "item_index.json").read_text())
    counts = load_prepared(settings, dataset).interactions["item_id"].value_counts().to_dict()
    path = artifact_dir / "popular.json"
    path.write_text(json.dumps(popularity_order(item_ids, counts, limit)))
    return path
