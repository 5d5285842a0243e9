"""The semantic basis: fixed content embeddings of items, the coordinate system LTE vectors live in.

A basis is immutable and identified by its fingerprint: sha256 over the encoder id, the item
ids and the vector bytes. Two LTE versions computed in bases with the same fingerprint are
readable by the same model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# The two quoted annotations in SemanticBasis are kept verbatim (other modules depend on that class).
# ruff: noqa: UP037


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


# ---------------------------------------------------------------------------------------------
# Builders, artifacts. Everything below is added on top of the two definitions above, which the
# LTE pipeline and the version catalog depend on and which must not change.
# ---------------------------------------------------------------------------------------------

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "semantic-basis/1"
ATTR_HASH_VERSION = "attr-hash-v1"
RANDOM_HASH_VERSION = "random-hash-v1"
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_HEX = re.compile(r"[0-9a-f]{1,64}")


class BasisNotFoundError(LookupError):
    """No artifact with the requested fingerprint under a basis root."""


class BasisExistsError(FileExistsError):
    """An artifact directory exists with different (or unreadable) content; bases are immutable."""


@dataclass(frozen=True)
class BuiltBasis(SemanticBasis):
    """A SemanticBasis plus the parameters of the fixed reduction that produced it.

    Subclassing (rather than changing SemanticBasis) keeps every consumer of SemanticBasis
    working while letting the artifact carry what is needed to reproduce or extend the basis:
    the PCA mean and axes of a text basis, the token IDF weights of an attribute basis.

    reduction: JSON-able description (kind, model, dim, explained variance, weighting ...)
    params:    named numpy arrays (saved in params.npz; covered by a sha256 in the manifest)
    """

    reduction: dict[str, Any] = field(default_factory=dict, compare=False)
    params: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)


# --------------------------------------------------------------------------- items input


def _items_frame(items: pd.DataFrame) -> pd.DataFrame:
    """Canonical items frame (item_id str, text str, attributes list[str]) whatever came in."""
    from feature_store.sources.schema import validate_items

    return validate_items(items).reset_index(drop=True)


def _split_token(token: str) -> tuple[str, str]:
    kind, sep, value = token.partition(":")
    return (kind, value) if sep else ("tag", token)


def item_text_with_attributes(items: pd.DataFrame, kinds: Iterable[str] | None = None) -> list[str]:
    """One sentence per item: its text followed by its attribute tokens grouped by kind.

    "Toy Story (1995)" + ["genre:Animation", "genre:Comedy"] -> "Toy Story (1995). genre: Animation, Comedy."
    A sentence encoder reads the genre words as words, which is how the text+attributes basis lets
    the language model place "Comedy" near "Romance" rather than treating tokens as unrelated ids.
    """
    frame = _items_frame(items)
    keep = set(kinds) if kinds is not None else None
    out: list[str] = []
    for text, attrs in zip(frame["text"].tolist(), frame["attributes"].tolist(), strict=True):
        groups: dict[str, list[str]] = {}
        for tok in attrs:
            kind, value = _split_token(tok)
            if keep is None or kind in keep:
                groups.setdefault(kind, []).append(value.replace("_", " "))
        parts = [text.strip()] if text.strip() else []
        parts += [f"{kind}: {', '.join(values)}" for kind, values in groups.items()]
        out.append(". ".join(parts) + ("." if parts else ""))
    return out


# --------------------------------------------------------------------------- text basis


def fit_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic PCA by numpy SVD: (mean (D,), components (dim, D), explained variance ratio (dim,)).

    SVD axes are defined only up to sign; each axis is flipped so that its largest-magnitude
    coordinate is positive, which makes the basis reproducible across runs (and machines, up to
    floating-point noise in the decomposition itself).
    """
    x64 = np.asarray(x, dtype=np.float64)
    n, d = x64.shape
    if dim < 1 or dim > min(n - 1, d):
        raise ValueError(f"PCA to {dim} dims needs at least {dim + 1} non-empty rows and dim <= {d}; have {n} rows")
    mean = x64.mean(axis=0)
    _, s, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    comps = vt[:dim].copy()
    pivot = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(dim), pivot])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    var = s**2
    return mean, comps, (var[:dim] / var.sum()) if var.sum() > 0 else np.zeros(dim)


def project_pca(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Centre, project and L2-normalise rows; all-zero input rows (no text) stay zero rows."""
    x64 = np.asarray(x, dtype=np.float64)
    empty = ~np.any(x64 != 0, axis=1)
    z = (x64 - mean) @ components.T
    z[empty] = 0.0
    return _l2_rows(z)


def _l2_rows(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    out = np.divide(z, norm, out=np.zeros_like(z), where=norm > 0)
    return out.astype(np.float32)


def build_text_basis(
    items: pd.DataFrame,
    dim: int | None = 64,
    encoder: str = DEFAULT_TEXT_ENCODER,
    texts: Sequence[str] | None = None,
    *,
    text_label: str | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> BuiltBasis:
    """Text basis: sentence embeddings (384-d) of item text, PCA-reduced to ``dim``, L2-normalised.

    The PCA is fitted on these items' embeddings and is part of the basis (its mean and axes are
    stored with the artifact): LTE vectors are averages in this coordinate system, so a model
    trained on them is only valid for this exact reduction. Centring removes the direction all
    titles share ("a movie title"), which otherwise dominates dot products between averages.

    texts: override the text per item (same order as ``items``); ``text_label`` names the source
           in the encoder id (default "custom" when texts are given).
    dim=None keeps all 384 dims (mean-centred, not projected), for reference measurements.
    Items with empty text get a zero row.
    """
    from feature_store.pipelines.text_encoder import get_encoder

    frame = _items_frame(items)
    source = list(frame["text"]) if texts is None else [str(t) for t in texts]
    if len(source) != len(frame):
        raise ValueError(f"{len(source)} texts for {len(frame)} items")
    if texts is not None and text_label is None:
        text_label = "custom"
    enc = get_encoder(encoder, cache_dir=cache_dir, use_cache=use_cache, show_progress=show_progress)
    emb = enc.encode(source)
    has_text = np.array([bool(t.strip()) for t in source])
    name = f"text:{encoder}" + (f"+{text_label}" if text_label else "")
    reduction: dict[str, Any] = {
        "kind": "text",
        "model": encoder,
        "model_namespace": enc.namespace,
        "text_source": text_label or "text",
        "n_empty": int((~has_text).sum()),
    }
    if dim is None:
        # Centred but not projected: equal, up to a rotation, to a PCA keeping all input dims, so it
        # measures exactly what the reduction to ``dim`` costs.
        mean = emb[has_text].astype(np.float64).mean(axis=0) if has_text.any() else np.zeros(emb.shape[1])
        vectors = project_pca(emb, mean, np.eye(emb.shape[1]))
        reduction |= {"reduction": "center", "dim": int(emb.shape[1]), "fit_rows": int(has_text.sum())}
        return BuiltBasis(
            f"{name}|center{emb.shape[1]}",
            frame["item_id"].to_numpy(),
            vectors,
            reduction=reduction,
            params={"pca_mean": mean},
        )
    mean, comps, evr = fit_pca(emb[has_text], dim)
    vectors = project_pca(emb, mean, comps)
    reduction |= {
        "reduction": "pca",
        "dim": dim,
        "input_dim": int(emb.shape[1]),
        "fit_rows": int(has_text.sum()),
        "explained_variance": float(evr.sum()),
        "sign_convention": "largest-|coordinate| of each axis positive",
    }
    return BuiltBasis(
        f"{name}|pca{dim}",
        frame["item_id"].to_numpy(),
        vectors,
        reduction=reduction,
        params={"pca_mean": mean, "pca_components": comps, "pca_explained_variance_ratio": evr},
    )


def build_text_attribute_basis(
    items: pd.DataFrame,
    dim: int | None = 64,
    encoder: str = DEFAULT_TEXT_ENCODER,
    kinds: Iterable[str] | None = None,
    **kwargs: Any,
) -> BuiltBasis:
    """Text basis over "text. kind: v1, v2." sentences (see item_text_with_attributes)."""
    texts = item_text_with_attributes(items, kinds)
    return build_text_basis(items, dim, encoder, texts=texts, text_label="attrs", **kwargs)


# --------------------------------------------------------------------------- hashed bases


def hash_gaussian(token: str, dim: int, namespace: str = ATTR_HASH_VERSION) -> np.ndarray:
    """Deterministic standard-normal vector / sqrt(dim) for a token, derived from sha256 only.

    Specification (so any implementation can reproduce it): block_j = sha256(namespace || 0x00 ||
    utf8(token) || 0x00 || uint32_be(j)) for j = 0, 1, ...; the concatenated blocks are read as
    little-endian uint64 words w_i; u_i = ((w_i >> 11) + 0.5) / 2**53 lies in (0, 1); pairs
    (u_2k, u_2k+1) give two normals by Box-Muller: sqrt(-2 ln u_2k) * (cos, sin)(2 pi u_2k+1).
    The first ``dim`` normals, scaled by 1/sqrt(dim) (so the expected norm is 1), are returned.

    Not numpy's RNG (its streams may change between versions, and global state is shared) and not
    Python's hash() (salted per process): the same token yields the same vector everywhere.
    """
    n_pairs = (dim + 1) // 2
    need = 16 * n_pairs
    prefix = namespace.encode() + b"\0" + token.encode("utf-8") + b"\0"
    buf = bytearray()
    j = 0
    while len(buf) < need:
        buf += hashlib.sha256(prefix + j.to_bytes(4, "big")).digest()
        j += 1
    words = np.frombuffer(bytes(buf[:need]), dtype="<u8")
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.empty(2 * n_pairs, dtype=np.float64)
    z[0::2] = r * np.cos(2.0 * np.pi * u2)
    z[1::2] = r * np.sin(2.0 * np.pi * u2)
    return z[:dim] / np.sqrt(dim)


def token_idf(token_lists: Sequence[Sequence[str]]) -> dict[str, float]:
    """Smoothed inverse document frequency over items: ln((1 + N) / (1 + df)) + 1."""
    n = len(token_lists)
    df: dict[str, int] = {}
    for toks in token_lists:
        for t in set(toks):
            df[t] = df.get(t, 0) + 1
    return {t: float(np.log((1 + n) / (1 + c)) + 1.0) for t, c in df.items()}


def build_attribute_basis(
    items: pd.DataFrame,
    dim: int = 64,
    weighting: str = "idf",
    kinds: Iterable[str] | None = None,
) -> BuiltBasis:
    """Attribute basis for datasets without text: a fixed random projection of each item's token set.

    Every attribute token t gets g_t = hash_gaussian(t, dim) (sha256-derived, see there). An item's
    vector is sum_t w_t g_t over its distinct tokens (summed in sorted token order, so the result
    does not depend on token or item order), L2-normalised; items with no tokens get a zero row.
    Random Gaussian vectors in 64 dims are nearly orthogonal, so dot products between item
    vectors approximate the (weighted) cosine overlap of their token sets.

    weighting: "idf" (w_t = smoothed idf over these items, stored in the artifact; rare tokens
               such as a niche genre count more than "genre:Drama") or "count" (w_t = 1).
    kinds:     keep only tokens of these kinds ("genre" for "genre:Comedy"); None keeps all.
    """
    if weighting not in ("idf", "count"):
        raise ValueError(f"weighting must be 'idf' or 'count', not {weighting!r}")
    frame = _items_frame(items)
    keep = set(kinds) if kinds is not None else None
    token_lists = [
        sorted({t for t in attrs if keep is None or _split_token(t)[0] in keep}) for attrs in frame["attributes"]
    ]
    vocab = sorted({t for toks in token_lists for t in toks})
    col = {t: i for i, t in enumerate(vocab)}
    weights = token_idf(token_lists) if weighting == "idf" else dict.fromkeys(vocab, 1.0)
    w = np.array([weights[t] for t in vocab], dtype=np.float64)
    g = np.stack([hash_gaussian(t, dim) for t in vocab]) if vocab else np.zeros((0, dim))
    z = np.zeros((len(frame), dim), dtype=np.float64)
    for i, toks in enumerate(token_lists):
        for t in toks:  # sorted order: a fixed summation order, so bit-identical results
            z[i] += w[col[t]] * g[col[t]]
    kinds_id = ",".join(sorted(keep)) if keep is not None else "all"
    reduction = {
        "kind": "attribute-hash",
        "version": ATTR_HASH_VERSION,
        "dim": dim,
        "weighting": weighting,
        "token_kinds": kinds_id,
        "n_tokens": len(vocab),
        "n_empty": int(sum(1 for toks in token_lists if not toks)),
    }
    kinds_suffix = "" if keep is None else f"|{kinds_id}"
    return BuiltBasis(
        f"{ATTR_HASH_VERSION}|{dim}|{weighting}{kinds_suffix}",
        frame["item_id"].to_numpy(),
        _l2_rows(z),
        reduction=reduction,
        params={"tokens": np.asarray(vocab, dtype=str), "token_weights": w},
    )


def build_random_basis(items: pd.DataFrame, dim: int = 64) -> BuiltBasis:
    """Control basis: an independent sha256-derived Gaussian direction per item id, no content.

    An LTE in this basis carries no information about unseen items, so its ranking quality is the
    floor any content basis must beat.
    """
    frame = _items_frame(items)
    ids = frame["item_id"].tolist()
    z = np.stack([hash_gaussian(f"item:{i}", dim, RANDOM_HASH_VERSION) for i in ids]) if ids else np.zeros((0, dim))
    reduction = {"kind": "random-hash", "version": RANDOM_HASH_VERSION, "dim": dim}
    return BuiltBasis(f"{RANDOM_HASH_VERSION}|{dim}", frame["item_id"].to_numpy(), _l2_rows(z), reduction=reduction)


# --------------------------------------------------------------------------- artifacts


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _params_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def save_basis(basis: SemanticBasis, root: Path | str) -> Path:
    """Write ``basis`` to the immutable, content-addressed directory ``root/<fingerprint>/``.

    Files: vectors.npy (float32), item_ids.npy (unicode), params.npz (reduction parameters, if
    any) and manifest.json (encoder, dim, n_items, fingerprint, created_at, reduction, file
    hashes). The directory is assembled under a temporary name and renamed into place, so a
    reader never sees a partial artifact. Saving an identical basis again is a no-op returning the
    existing path; if the directory holds anything else (corrupt, or other reduction parameters)
    BasisExistsError is raised instead of overwriting: LTE versions refer to bases by fingerprint.
    """
    root = Path(root)
    final = root / basis.fingerprint
    if final.exists():
        return _check_existing(basis, root, final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{basis.fingerprint[:12]}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        np.save(tmp / "vectors.npy", basis.vectors, allow_pickle=False)
        np.save(tmp / "item_ids.npy", np.asarray(basis.item_ids, dtype=str), allow_pickle=False)
        params = basis.params if isinstance(basis, BuiltBasis) else {}
        reduction = basis.reduction if isinstance(basis, BuiltBasis) else {}
        files = ["vectors.npy", "item_ids.npy"]
        if params:
            np.savez(tmp / "params.npz", **{k: np.asarray(v) for k, v in params.items()})
            files.append("params.npz")
        manifest = {
            "format": ARTIFACT_FORMAT,
            "fingerprint": basis.fingerprint,
            "encoder": basis.encoder,
            "dim": basis.dim,
            "n_items": len(basis.item_ids),
            "n_zero_rows": int((~np.any(basis.vectors != 0, axis=1)).sum()),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "reduction": reduction,
            "files": {name: _file_sha256(tmp / name) for name in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o444)
        try:
            os.rename(tmp, final)
        except OSError:
            # Someone saved the same fingerprint concurrently: theirs stands if it is identical.
            if final.exists():
                return _check_existing(basis, root, final)
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved basis %s (%s, %d items) to %s", basis.fingerprint[:12], basis.encoder, len(basis.item_ids), final)
    return final


def _check_existing(basis: SemanticBasis, root: Path, final: Path) -> Path:
    try:
        existing = load_basis(root, basis.fingerprint)
    except (BasisNotFoundError, OSError, ValueError, KeyError) as exc:
        raise BasisExistsError(
            f"{final} exists but is not a valid basis artifact ({exc}); bases are immutable, refusing to overwrite"
        ) from exc
    if isinstance(basis, BuiltBasis) and basis.params and not _params_equal(basis.params, existing.params):
        raise BasisExistsError(
            f"{final} holds the same vectors with different reduction parameters; refusing to overwrite"
        )
    return final


def list_bases(root: Path | str) -> list[dict[str, Any]]:
    """Manifests of all complete artifacts under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for manifest in root.glob("*/manifest.json"):
        if manifest.parent.name.startswith("."):
            continue
        try:
            out.append(json.loads(manifest.read_text()))
        except (OSError, ValueError):
            log.warning("skipping unreadable basis manifest %s", manifest)
    return sorted(out, key=lambda m: (m.get("created_at", ""), m.get("fingerprint", "")))


def _describe(manifests: list[dict[str, Any]]) -> str:
    if not manifests:
        return "none"
    return "; ".join(f"{m['fingerprint']} ({m.get('encoder')}, {m.get('n_items')} items)" for m in manifests)


def load_basis(root: Path | str, fingerprint: str) -> BuiltBasis:
    """Load and verify the artifact ``root/<fingerprint>/`` (a unique prefix of >= 8 hex chars also works).

    The fingerprint is recomputed from the loaded encoder id, item ids and vectors (SemanticBasis
    does it when given ``fingerprint=``), and params.npz is checked against its manifest hash, so
    a modified artifact fails loudly instead of silently shifting every LTE vector.
    """
    root = Path(root)
    path = root / fingerprint
    if not _HEX.fullmatch(fingerprint) or not (path / "manifest.json").is_file():
        available = list_bases(root)
        matches = [m for m in available if len(fingerprint) >= 8 and m["fingerprint"].startswith(fingerprint)]
        if len(matches) != 1:
            raise BasisNotFoundError(
                f"no semantic basis {fingerprint!r} under {root}"
                + (" (prefix is ambiguous)" if len(matches) > 1 else "")
                + f"; available: {_describe(available)}"
            )
        path = root / matches[0]["fingerprint"]
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{path}: unknown basis artifact format {manifest.get('format')!r}")
    vectors = np.load(path / "vectors.npy", allow_pickle=False)
    item_ids = np.load(path / "item_ids.npy", allow_pickle=False)
    params: dict[str, np.ndarray] = {}
    if "params.npz" in manifest.get("files", {}):
        expected = manifest["files"]["params.npz"]
        if _file_sha256(path / "params.npz") != expected:
            raise ValueError(f"{path}/params.npz does not match its manifest hash")
        with np.load(path / "params.npz", allow_pickle=False) as z:
            params = {k: z[k] for k in z.files}
    return BuiltBasis(
        manifest["encoder"],
        item_ids,
        vectors,
        fingerprint=manifest["fingerprint"],
        reduction=manifest.get("reduction", {}),
        params=params,
    )
