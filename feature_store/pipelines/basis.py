"""The semantic basis: fixed content embeddings of items, the coordinate system LTE vectors live in.

A basis is immutable and identified by its fingerprint: sha256 over the encoder id, the item
ids and the vector bytes. Two LTE versions computed in bases with the same fingerprint are
readable by the same model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


def basis_fingerprint(encoder: str, item_ids: np.ndarray, vectors: np.ndarray) -> str:
    """sha256 over encoder id, item ids and float32 vector bytes (C order)."""
    h = hashlib.sha256()
    h.update(b"encoder\0" + encoder.encode() + b"\0")
    h.update(b"items\0" + "\x1f".join(map(str, item_ids)).encode() + b"\0")
    vec = np.ascontiguousarray(vectors, dtype=np.float32)
    h.update(f"shape\0{vec.shape[0]}x{vec.shape[1]}\0".encode())
    h.update(vec.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SemanticBasis:
    """Item content vectors in a fixed coordinate system.

    encoder:  what produced the vectors, e.g. "text:all-MiniLM-L6-v2|pca64" or "attr-hash-v1|64"
    item_ids: (n,) str array, the basis' item order
    vectors:  (n, d) float32, L2-normalised rows (an item with no content has a zero row)
    """

    encoder: str
    item_ids: np.ndarray
    vectors: np.ndarray
    fingerprint: str = field(default="")
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.item_ids).astype(str)
        vec = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if vec.ndim != 2 or vec.shape[0] != ids.shape[0]:
            raise ValueError(f"basis vectors {vec.shape} do not match {ids.shape[0]} item ids")
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "vectors", vec)
        fp = basis_fingerprint(self.encoder, ids, vec)
        if self.fingerprint and self.fingerprint != fp:
            raise ValueError(f"basis fingerprint mismatch: stored {self.fingerprint[:12]}, computed {fp[:12]}")
        object.__setattr__(self, "fingerprint", fp)
        object.__setattr__(self, "_index", {iid: i for i, iid in enumerate(ids.tolist())})

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def positions(self, item_ids: "np.ndarray | list[str]") -> np.ndarray:
        """Row index per item id; -1 for items outside the basis."""
        idx = self._index
        return np.fromiter((idx.get(str(i), -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def lookup(self, item_ids: "np.ndarray | list[str]") -> np.ndarray:
        """(len(item_ids), d) vectors; zero rows for items outside the basis."""
        pos = self.positions(item_ids)
        out = np.zeros((len(pos), self.dim), dtype=np.float32)
        ok = pos >= 0
        out[ok] = self.vectors[pos[ok]]
        return out
