"""Model loading for services: registry version -> cached ONNX Runtime session, several versions live.

A request names a model version or an alias; the loader resolves it (aliases are re-resolved
at most every ``alias_ttl_s`` so a deploy shows up within a second), loads the version's ONNX
once, verifies its files against the manifest's hashes, and keeps it. Old versions stay loaded,
so in-flight requests finish on the version they started with and a rollback needs no reload.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.onnx_runtime import inference_session


@dataclass
class LoadedModel:
    """One registered model version, ready to run."""

    name: str
    version: int
    family: str
    manifest: Any  # models.registry.ModelManifest; typed loosely so the kit does not import the registry
    path: Path
    session: Any  # onnxruntime.InferenceSession
    input_names: frozenset[str]
    item_ids: np.ndarray  # index -> item id ("" at index 0, the padding index)
    item_index: dict[str, int]
    params: dict[str, Any]
    popular: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # fallback ranking

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def feature_refs(self) -> list[str]:
        return [p.ref for p in self.manifest.feature_refs]

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The retrieval graph's top-k: ``(scores, items)`` (the sequential family's outputs)."""
        scores, items = self.outputs(["scores", "items"], feeds)
        return scores, items

    def outputs(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Any graph's named outputs; feeds the graph does not declare are left out."""
        return self.session.run(names, {k: v for k, v in feeds.items() if k in self.input_names})


def load_artifact(name: str, version: int, family: str, manifest: Any, path: Path, threads: int = 1) -> LoadedModel:
    onnx_path = path / "model.onnx"
    session = inference_session(onnx_path, threads)
    # Families that rank a catalogue ship item_index.json (index -> item id); a CTR ranker scores
    # whatever candidates it is given and ships none.
    index_path = path / "item_index.json"
    item_ids = np.asarray(json.loads(index_path.read_text()) if index_path.exists() else [""], dtype=object)
    params_path = path / "params.json"
    params = json.loads(params_path.read_text()) if params_path.exists() else {}
    params = {**params, **(getattr(manifest, "params", None) or {})}
    popular_path = path / "popular.json"
    popular = np.asarray(json.loads(popular_path.read_text()), dtype=np.int64) if popular_path.exists() else None
    if popular is None:
        # No shipped popularity: fall back to catalogue order (flagged as degraded by the caller).
        popular = np.arange(1, len(item_ids), dtype=np.int64)
    return LoadedModel(
        name=name,
        version=version,
        family=family,
        manifest=manifest,
        path=path,
        session=session,
        input_names=frozenset(i.name for i in session.get_inputs()),
        item_ids=item_ids,
        item_index={str(iid): i for i, iid in enumerate(item_ids) if i > 0},
        params=params,
        popular=popular,
    )


class ModelLoader:
    """Resolves ``(name, alias|version)`` through the registry and caches loaded versions."""

    def __init__(self, registry: Any, threads: int = 1, alias_ttl_s: float = 0.5, verify: bool = True) -> None:
        self.registry = registry
        self.threads = threads
        self.alias_ttl_s = alias_ttl_s
        self.verify = verify
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._aliases: dict[tuple[str, str], tuple[float, int]] = {}
        # stale aliases one request is re-resolving -> when it started (a lost refresh expires)
        self._refreshing: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def resolve_version(self, name: str, ref: str | int) -> int:
        if isinstance(ref, int) or str(ref).lstrip("v").isdigit():
            return int(str(ref).lstrip("v"))
        key = (name, str(ref))
        hit = self._aliases.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.alias_ttl_s:
            return hit[1]
        try:
            version = int(self.registry.resolve(name, ref).manifest.version)
        finally:
            self._refreshing.pop(key, None)
        self._aliases[key] = (now, version)
        return version

    def get(self, name: str, ref: str | int) -> LoadedModel:
        version = self.resolve_version(name, ref)
        model = self._models.get((name, version))
        if model is not None:
            return model
        with self._lock:  # one load per version even when many requests arrive at once
            model = self._models.get((name, version))
            if model is None:
                mv = self.registry.get(name, version)
                if self.verify:
                    self.registry.verify(name, version)
                model = load_artifact(name, version, mv.manifest.family, mv.manifest, Path(mv.path), self.threads)
                self._models[(name, version)] = model
        return model

    def peek(self, name: str, ref: str | int) -> LoadedModel | None:
        """The loaded model if resolving ``ref`` needs no I/O (fresh alias, version loaded), else None.

        Lets an async handler stay on the event loop on the hot path and send only registry
        lookups and loads (database, hashing, ONNX session creation) to a thread. When an alias
        goes stale, the first caller gets None and re-resolves it (``get``, in a thread); until
        that lookup returns, the others keep the version the alias last resolved to, so a busy
        service does not send every request to the registry each time the TTL runs out (a burst
        of thread hops and database reads, and a latency spike, every ``alias_ttl_s``).
        """
        if isinstance(ref, int) or str(ref).lstrip("v").isdigit():
            version = int(str(ref).lstrip("v"))
        else:
            key = (name, str(ref))
            hit = self._aliases.get(key)
            if hit is None:
                return None
            now = time.monotonic()
            if now - hit[0] >= self.alias_ttl_s and now - self._refreshing.get(key, -1e9) >= 10 * self.alias_ttl_s:
                self._refreshing[key] = now  # this caller re-resolves; only the event loop thread sets this
                return None
            version = hit[1]
        return self._models.get((name, version))

    def loaded(self) -> list[str]:
        return sorted(m.label for m in self._models.values())


# --- the model-serving routes every recommender service shares -----------------------------------------

# A request's ``model_version``: a version number (``3``, ``v3``) or an alias.
MODEL_VERSION_PATTERN = r"^(v?[0-9]+|[a-z][a-z0-9_-]*)$"


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_version: str = Field(pattern=MODEL_VERSION_PATTERN)


class ServedModel:
    """The model half of every recommender service: which registered model it serves, the loader
    that resolves aliases and keeps versions loaded, and the feature client.

    The service's lifespan is ``running()`` (build both, warm the default version so the first
    request does not pay for loading it); its routes call ``resolve``; ``readiness`` is its
    ``/readyz``; ``admin_router`` its deploy pre-flight route. ``prepare`` is the family's own
    per-version step (checks and caches the graph alone does not give) run whenever a version
    is loaded on purpose (warm-up, admin load, first request), so a version that would fail it
    fails the deploy's pre-flight, not a user's request. ``registry``/``features``: injected ones
    (tests) instead of those built from the settings; an injected feature client is not closed.
    """

    def __init__(
        self,
        service: str,
        model_name: str,
        default_ref: str,
        threads: int,
        fs_settings: Any,
        registry: Any | None = None,
        features: Any | None = None,
        prepare: Callable[[LoadedModel], object] | None = None,
    ) -> None:
        self.service = service
        self.model_name = model_name
        self.default_ref = default_ref
        self.threads = threads
        self.fs_settings = fs_settings
        self.prepare = prepare
        self._registry = registry
        self._features = features
        self.loader: ModelLoader | None = None
        self.features: Any = features
        self.load_error: str | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        from models.registry import ModelRegistry
        from services.kit.features import ServiceFeatureClient

        registry = self._registry or ModelRegistry.from_settings(self.fs_settings)
        self.loader = ModelLoader(registry, threads=self.threads)
        if self._features is None:
            self.features = ServiceFeatureClient.from_settings(self.service, self.fs_settings)
        try:
            self.load(self.default_ref)
        except Exception as exc:  # serve anyway: /readyz says why, requests for other versions work
            self.load_error = str(exc)
        try:
            yield
        finally:
            if self._features is None:
                self.features.close()

    def load(self, ref: str) -> LoadedModel:
        """Resolve and load ``ref`` (blocking: registry, hashing, ONNX session); 404 if unknown."""
        from services.kit.errors import ApiError

        assert self.loader is not None, "ServedModel.load before running()"
        try:
            model = self.loader.get(self.model_name, ref)
        except LookupError as exc:
            raise ApiError(404, "unknown_model_version", str(exc)) from exc
        if self.prepare is not None:
            self.prepare(model)
        return model

    async def resolve(self, ref: str | None) -> LoadedModel:
        """A request's model: ``ref`` or the default. Cached versions resolve on the event loop;
        registry lookups and loads block, so they go to a thread."""
        from starlette.concurrency import run_in_threadpool

        ref = ref or self.default_ref
        assert self.loader is not None, "ServedModel.resolve before running()"
        model = self.loader.peek(self.model_name, ref)
        return model if model is not None else await run_in_threadpool(self.load, ref)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: ready once any version is loaded; says why not otherwise."""
        loaded = self.loader.loaded() if self.loader else []
        details: dict[str, Any] = {"loaded": loaded}
        if self.load_error is not None and not loaded:
            details["error"] = self.load_error
        return bool(loaded), details

    def admin_router(self, settings: Any, describe: Callable[[LoadedModel], dict[str, Any]] | None = None) -> Any:
        return admin_load_router(settings, self.load, describe)


def admin_load_router(
    settings: Any, load: Callable[[str], LoadedModel], describe: Callable[[LoadedModel], dict[str, Any]] | None = None
) -> Any:
    """``POST /v1/admin/load {model_version}`` (admin token): the pre-flight of a deploy loads and
    hash-verifies a version so it is warm before any alias moves. ``load`` resolves and loads (raising
    LookupError for an unknown version); ``describe`` adds family-specific facts to the answer."""
    from fastapi import APIRouter, Depends

    from services.kit.auth import admin_token_dependency
    from services.kit.errors import ApiError, error_responses

    router = APIRouter(tags=["admin"])

    @router.post(
        "/v1/admin/load",
        dependencies=[Depends(admin_token_dependency(settings))],
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def load_version(body: LoadRequest) -> dict[str, Any]:
        """Pre-flight of a deploy: load (and hash-verify) a version so it is warm before any alias moves."""
        try:
            model = load(body.model_version)
        except LookupError as exc:
            raise ApiError(404, "unknown_model_version", str(exc)) from exc
        out = {"loaded": model.label, "inputs": sorted(model.input_names), "feature_refs": model.feature_refs}
        return out | (describe(model) if describe else {})

    return router
