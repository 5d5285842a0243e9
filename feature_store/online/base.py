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

from feature_store.online.valueproto import (
    decode_float_list_into,
    decode_timestamp,
    decode_value,
    float_list_header,
)
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
    event_ts (the feature row's event time, for freshness checks) is decoded on first use.
    """

    ref: str
    entity_ids: list[str]
    present: np.ndarray
    values: dict[str, object]
    raw_ts: list[object]
    _event_ts: list[datetime | None] | None = None

    @property
    def event_ts(self) -> list[datetime | None]:
        if self._event_ts is None:
            self._event_ts = [decode_ts(t) for t in self.raw_ts]
        return self._event_ts

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
        # (ref, requested features) -> resolved fields; specs are immutable so this never goes stale.
        self._plans: dict[tuple[str, tuple[str, ...] | None], list[FeatureField]] = {}

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
        key = (version.ref, None if features is None else tuple(features))
        fields = self._plans.get(key)
        if fields is None:
            fields = list(version.fields) if features is None else [version.field(n) for n in features]
            self._plans[key] = fields
        ids = entity_ids if isinstance(entity_ids, list) else list(entity_ids)
        raw = self.fetch_raw(version, fields, ids)
        n = len(ids)
        present = np.fromiter((r is not None for r in raw), dtype=bool, count=n)
        values: dict[str, object] = {}
        for j, f in enumerate(fields):
            if f.dtype == "float_list" and f.length:
                values[f.name] = _decode_vectors(raw, j, f.length, n)
                continue
            col: list[object] = []
            for r in raw:
                v = decode_value(r[j]) if r is not None else None
                if v is None and missing == "default":
                    v = default_value(f)
                col.append(v)
            values[f.name] = col
        ts = [r[-1] if r is not None else None for r in raw]
        return FeatureRows(ref=version.ref, entity_ids=ids, present=present, values=values, raw_ts=ts)


def _decode_vectors(raw: list[list[bytes | None] | None], j: int, length: int, n: int) -> np.ndarray:
    """All rows' fixed-length FloatList values as one (n, length) matrix.

    Hot path: every well-formed value starts with the same header, so the float bytes of all
    rows are joined and converted with a single frombuffer instead of one parse per row.
    """
    header = float_list_header(length)
    hlen = len(header)
    size = hlen + 4 * length
    rows = [i for i, r in enumerate(raw) if r is not None and r[j] is not None]
    payloads = [raw[i][j] for i in rows]  # type: ignore[index]
    if rows and all(len(p) == size and p.startswith(header) for p in payloads):  # type: ignore[arg-type, union-attr]
        block = np.frombuffer(b"".join(p[hlen:] for p in payloads), dtype="<f4").reshape(len(rows), length)  # type: ignore[index]
        if len(rows) == n:
            return block.copy()  # writable, like the zero-filled path
        mat = np.zeros((n, length), dtype=np.float32)
        mat[rows] = block
        return mat
    mat = np.zeros((n, length), dtype=np.float32)
    for i, p in zip(rows, payloads, strict=True):
        if not decode_float_list_into(p, mat[i]):  # type: ignore[arg-type]
            mat[i] = decode_value(p)  # type: ignore[assignment]
    return mat


def decode_ts(raw: object) -> datetime | None:
    if raw is None or isinstance(raw, datetime):
        return raw
    if isinstance(raw, int | float):  # Feast's SQLite store writes epoch seconds
        return datetime.fromtimestamp(raw, tz=UTC)
    if isinstance(raw, str):
        return datetime.fromisoformat(raw)
    return decode_timestamp(raw)  # type: ignore[arg-type]
