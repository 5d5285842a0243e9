"""The online reader interface: read pinned feature versions for one or many entities.

One abstract reader, one file per backend (redis.py, sqlite.py), like Feast's online stores.
Backends only fetch raw bytes in Feast's layout; decoding and the missing-entity policy live
here, once. Nothing in this package imports Feast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from feature_store.online.valueproto import decode_float_list_into, decode_timestamp, decode_value
from feature_store.versions import FeatureField, FeatureStoreError, FeatureVersion

# What a missing entity (or a feature never written for it) reads as.
#   "default": the field's documented default (zeros for fixed-length vectors, [] for lists,
#              0 / 0.0 / "" for scalars) with present=False;  "none": None with present=False.
MissingPolicy = Literal["default", "none"]


class FeatureNotOnline(FeatureStoreError):
    """The version exists in the catalog but has not been materialized to this online store."""


def default_value(f: FeatureField) -> object:
    if f.dtype == "float_list":
        return np.zeros(f.length or 0, dtype=np.float32)
    if f.dtype in ("string_list", "int64_list"):
        return []
    return {"int64": 0, "double": 0.0, "string": ""}[f.dtype]


@dataclass
class FeatureRows:
    """Feature values for a list of entities, in request order.

    values[name] is an (n, length) float32 array for fixed-length vectors, else a list.
    present[i] is False for entities the online store does not have (values hold defaults).
    """

    ref: str
    entity_ids: list[str]
    present: np.ndarray
    values: dict[str, object]
    event_ts: list[datetime | None]

    def row(self, i: int) -> dict[str, object]:
        return {name: col[i] for name, col in self.values.items()}  # type: ignore[index]

    @property
    def missing(self) -> list[str]:
        return [e for e, ok in zip(self.entity_ids, self.present, strict=True) if not ok]


class OnlineReader(ABC):
    """Reads feature versions straight from the online store Feast materialized into."""

    store_name: str = "abstract"

    def __init__(self, project: str) -> None:
        self.project = project

    @abstractmethod
    def fetch_raw(
        self, version: FeatureVersion, features: Sequence[FeatureField], entity_ids: Sequence[str]
    ) -> list[list[bytes | None] | None]:
        """Per entity: raw Value bytes per feature in ``features`` order, then the raw timestamp; None if absent."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def read(
        self,
        version: FeatureVersion,
        entity_ids: Sequence[str],
        features: Sequence[str] | None = None,
        missing: MissingPolicy = "default",
    ) -> FeatureRows:
        fields = list(version.fields) if features is None else [version.field(n) for n in features]
        ids = [str(e) for e in entity_ids]
        raw = self.fetch_raw(version, fields, ids)
        n = len(ids)
        present = np.fromiter((r is not None for r in raw), dtype=bool, count=n)
        values: dict[str, object] = {}
        for j, f in enumerate(fields):
            if f.dtype == "float_list" and f.length:
                mat = np.zeros((n, f.length), dtype=np.float32)
                for i, r in enumerate(raw):
                    if r is not None and r[j] is not None and not decode_float_list_into(r[j], mat[i]):  # type: ignore[arg-type]
                        mat[i] = decode_value(r[j])  # type: ignore[assignment]
                values[f.name] = mat
                continue
            col: list[object] = []
            for r in raw:
                v = decode_value(r[j]) if r is not None else None
                if v is None and missing == "default":
                    v = default_value(f)
                col.append(v)
            values[f.name] = col
        ts = [decode_ts(r[-1]) if r is not None else None for r in raw]
        return FeatureRows(ref=version.ref, entity_ids=ids, present=present, values=values, event_ts=ts)


def decode_ts(raw: object) -> datetime | None:
    if raw is None or isinstance(raw, datetime):
        return raw
    if isinstance(raw, int | float):  # Feast's SQLite store writes epoch seconds
        return datetime.fromtimestamp(raw, tz=UTC)
    if isinstance(raw, str):
        return datetime.fromisoformat(raw)
    return decode_timestamp(raw)  # type: ignore[arg-type]
