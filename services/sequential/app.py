"""Sequential recommender service: SASRec with an LTE prefix token, served from ONNX.

POST /v1/recommend {user_id, k, exclude_seen, recent_items?, model_version?}
  -> reads the user's recent items and LTE at exactly the feature versions the model pins,
     runs the model (top-k inside the graph), returns items, scores, model and feature versions.
A user the feature store does not know (and who sends no recent items) gets a popularity
fallback flagged ``fallback: true``; so does every user while the online store is unreachable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from feature_store.config import FeatureStoreSettings
from feature_store.online import FeatureNotOnline
from feature_store.versions import parse_ref
from services.kit.app import create_app
from services.kit.auth import admin_token_dependency
from services.kit.errors import ApiError
from services.kit.features import ServiceFeatureClient
from services.kit.metrics import INFERENCE_LATENCY
from services.kit.models import LoadedModel, ModelLoader
from services.kit.settings import ServiceSettings

SERVICE = "sequential"
log = logging.getLogger(__name__)


class SequentialSettings(ServiceSettings):
    service_name: str = SERVICE
    # Which registered model this service serves, and the alias used when a request names none.
    model_name: str = "seq-lte"
    default_model_ref: str = "champion"
    onnx_threads: int = 1
    max_recent_items: int = 200


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, examples=["u0001"])
    k: int = Field(default=10, ge=1, le=1000, description="number of items; at most the model's top_k")
    exclude_seen: bool = Field(default=True, description="never return items the user has interacted with")
    recent_items: list[str] | None = Field(
        default=None, description="items the client saw the user interact with since the feature snapshot"
    )
    model_version: str | None = Field(
        default=None, pattern=r"^(v?[0-9]+|[a-z][a-z0-9_-]*)$", description="a version number or an alias"
    )


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_version: str = Field(pattern=r"^(v?[0-9]+|[a-z][a-z0-9_-]*)$")


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    model: str
    model_version: int
    feature_versions: list[str]
    fallback: bool = False
    fallback_reason: str | None = None


def _lte_ref(model: LoadedModel) -> str | None:
    for ref in model.feature_refs:
        if parse_ref(ref)[0].startswith("lte_"):
            return ref
    return None


def _recent_ref(model: LoadedModel) -> str | None:
    for ref in model.feature_refs:
        if parse_ref(ref)[0] == "recent_items":
            return ref
    return None


def recommend(
    model: LoadedModel, features: ServiceFeatureClient, body: RecommendRequest, now_ts: float
) -> RecommendResponse:
    """The request path: pinned features -> model inputs -> ONNX -> top-k (or the flagged fallback)."""
    from models.sequential.features import build_inputs

    top_k = int(model.params.get("top_k", 100))
    if body.k > top_k:
        raise ApiError(422, "k_too_large", f"k={body.k} exceeds this model's top_k={top_k}")
    lte_ref, recent_ref = _lte_ref(model), _recent_ref(model)
    request_items = [i for i in (body.recent_items or []) if i in model.item_index]
    fallback_reason = None
    recent_ids: list[str] = []
    recent_ts: list[int] = []
    lte = None
    lte_as_of: float | None = None
    try:
        if recent_ref:
            rows = features.read(recent_ref, [body.user_id])
            if rows.present[0]:
                recent_ids = list(rows.values["item_ids"][0])  # type: ignore[index]
                recent_ts = list(rows.values["timestamps"][0])  # type: ignore[index]
        if lte_ref:
            rows = features.read(lte_ref, [body.user_id], ["lte"])
            # The sequence starts where this LTE value's horizon ends: its snapshot time minus the lag
            # (models/sequential/features.py); a user without a row gets the version's as-of.
            lte_as_of = features.client.version(lte_ref).window.as_of.timestamp()
            if rows.present[0]:
                lte = rows.values["lte"][0]  # type: ignore[index]
                ts = rows.event_ts[0]
                lte_as_of = ts.timestamp() if ts is not None else lte_as_of
    except (FeatureNotOnline, OSError, ConnectionError) as exc:
        fallback_reason = f"feature store unavailable: {type(exc).__name__}"
        log.warning("feature read failed for %s: %s", model.label, exc)
    except Exception as exc:  # redis.exceptions.* do not all derive from OSError
        if type(exc).__module__.startswith("redis"):
            fallback_reason = f"feature store unavailable: {type(exc).__name__}"
        else:
            raise
    now = int(now_ts)
    if request_items:
        recent_ids = recent_ids + request_items
        recent_ts = recent_ts + [now] * len(request_items)
    seen = {model.item_index[i] for i in recent_ids if i in model.item_index} if body.exclude_seen else set()
    if fallback_reason is None and not recent_ids and lte is None:
        fallback_reason = "unknown user: no recent items and no LTE at the pinned versions"
    if fallback_reason is not None:
        ranked = [int(i) for i in model.popular if int(i) not in seen][: body.k]
        items = [ScoredItem(item_id=str(model.item_ids[i]), score=0.0) for i in ranked]
        return RecommendResponse(
            user_id=body.user_id,
            items=items,
            model=model.name,
            model_version=model.version,
            feature_versions=model.feature_refs,
            fallback=True,
            fallback_reason=fallback_reason,
        )
    item_seq, lte_vec = build_inputs(
        recent_ids,
        recent_ts,
        lte,
        model.item_index,
        int(model.params["max_len"]),
        now,
        float(model.params.get("lag_seconds", 0)),
        int(model.params.get("lte_dim") or 0),
    )
    exclude = np.zeros((1, len(model.item_ids)), dtype=bool)
    exclude[0, 0] = True
    if seen:
        exclude[0, list(seen)] = True
    feeds: dict[str, np.ndarray] = {"item_seq": item_seq[None, :], "exclude": exclude}
    if lte_vec is not None:
        feeds["lte"] = lte_vec[None, :].astype(np.float32)
    start = time.perf_counter()
    scores, idx = model.run(feeds)
    INFERENCE_LATENCY.labels(SERVICE, model.name, str(model.version)).observe(time.perf_counter() - start)
    items = [
        ScoredItem(item_id=str(model.item_ids[i]), score=float(s))
        for s, i in zip(scores[0][: body.k], idx[0][: body.k], strict=True)
        if np.isfinite(s)
    ]
    return RecommendResponse(
        user_id=body.user_id,
        items=items,
        model=model.name,
        model_version=model.version,
        feature_versions=model.feature_refs,
    )


def build_app(
    settings: SequentialSettings | None = None,
    fs_settings: FeatureStoreSettings | None = None,
    registry: Any | None = None,
) -> FastAPI:
    settings = settings or SequentialSettings()
    fs_settings = fs_settings or FeatureStoreSettings()
    router = APIRouter(tags=["recommend"])
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from models.registry import ModelRegistry

        reg = registry or ModelRegistry.from_settings(fs_settings)
        state["loader"] = ModelLoader(reg, threads=settings.onnx_threads)
        state["features"] = ServiceFeatureClient.from_settings(SERVICE, fs_settings)
        try:  # warm the default version so the first request does not pay for loading it
            state["loader"].get(settings.model_name, settings.default_model_ref)
        except Exception as exc:
            state["load_error"] = str(exc)
        yield
        state["features"].close()

    @router.post("/v1/recommend", responses={404: {}, 422: {}})
    def recommend_route(body: RecommendRequest, request: Request) -> RecommendResponse:
        if body.recent_items is not None and len(body.recent_items) > settings.max_recent_items:
            raise ApiError(
                422,
                "too_many_recent_items",
                f"{len(body.recent_items)} recent_items; at most {settings.max_recent_items}",
            )
        loader: ModelLoader = state["loader"]
        ref = body.model_version or settings.default_model_ref
        try:
            model = loader.get(settings.model_name, ref)
        except LookupError as exc:
            raise ApiError(404, "unknown_model_version", str(exc)) from exc
        request.state.model, request.state.model_version = model.name, str(model.version)
        return recommend(model, state["features"], body, time.time())

    @router.post("/v1/admin/load", dependencies=[Depends(admin_token_dependency(settings))], tags=["admin"])
    def load_version(body: LoadRequest) -> dict[str, Any]:
        """Pre-flight of a deploy: load (and hash-verify) a version so it is warm before any alias moves."""
        loader: ModelLoader = state["loader"]
        try:
            model = loader.get(settings.model_name, body.model_version)
        except LookupError as exc:
            raise ApiError(404, "unknown_model_version", str(exc)) from exc
        return {"loaded": model.label, "inputs": sorted(model.input_names), "feature_refs": model.feature_refs}

    def ready() -> tuple[bool, dict[str, Any]]:
        loader: ModelLoader | None = state.get("loader")
        loaded = loader.loaded() if loader else []
        details: dict[str, Any] = {"loaded": loaded}
        if "load_error" in state and not loaded:
            details["error"] = state["load_error"]
        return bool(loaded), details

    return create_app(SERVICE, [router], ready=ready, lifespan=lifespan)


def app_factory() -> FastAPI:
    """uvicorn entry point: ``uvicorn --factory services.sequential.app:app_factory``."""
    return build_app()
