"""Sequential recommender service: SASRec with an LTE prefix token, served from ONNX.

POST /v1/recommend {user_id, k, exclude_seen, recent_items?, model_version?}
  -> reads the user's recent items and LTE at exactly the feature versions the model pins,
     runs the model (top-k inside the graph), returns items, scores, model and feature versions.
A user the feature store does not know (and who sends no recent items) gets a popularity
fallback flagged ``fallback: true``; so does every user while the online store is unreachable.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from feature_store.config import FeatureStoreSettings
from feature_store.online import FeatureNotOnline
from feature_store.versions import parse_ref
from services.kit.app import create_app
from services.kit.batching import BatcherPerVersion
from services.kit.errors import ApiError, error_responses
from services.kit.features import ServiceFeatureClient
from services.kit.metrics import INFERENCE_LATENCY
from services.kit.models import (
    MODEL_VERSION_PATTERN,
    LoadedModel,
    ServedModel,
)
from services.kit.routes import LeanJSONRoute
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
        default=None, pattern=MODEL_VERSION_PATTERN, description="a version number or an alias"
    )


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    """The answer's schema (OpenAPI). The hot path builds it as a plain dict of exactly these fields
    (``Answer``), encoded once by orjson: validating each answer it has just built from the model's
    own outputs cost ~6% of the embedded process's CPU under load.
    tests/e2e/test_sequential_service.py checks served answers against this model."""

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


# A RecommendResponse as a plain dict (see RecommendResponse).
Answer = dict[str, Any]


def recommend(model: LoadedModel, features: ServiceFeatureClient, body: RecommendRequest, now_ts: float) -> Answer:
    """One request alone (the unbatched path): the same code as a batch of one."""
    (result,) = recommend_batch(model, features, [body], [now_ts])
    if isinstance(result, BaseException):
        raise result
    return result


def recommend_batch(
    model: LoadedModel, features: ServiceFeatureClient, bodies: Sequence[RecommendRequest], now_ts: Sequence[float]
) -> list[Answer | Exception]:
    """The request path for several requests of one model version, answered as if each ran alone.

    Pinned features for all users in one multi-entity read per view -> model inputs per request ->
    ONE ONNX call over the requests that need the model -> top-k per row (or each request's flagged
    fallback). Returns one response or exception per request, in order: a bad request fails alone.
    """
    from models.sequential.features import build_inputs

    n = len(bodies)
    results: list[Answer | Exception | None] = [None] * n
    top_k = int(model.params.get("top_k", 100))
    live: list[int] = []  # requests still to answer
    for i, body in enumerate(bodies):
        if body.k > top_k:
            results[i] = ApiError(422, "k_too_large", f"k={body.k} exceeds this model's top_k={top_k}")
        else:
            live.append(i)
    lte_ref, recent_ref = _lte_ref(model), _recent_ref(model)
    users = list(dict.fromkeys(bodies[i].user_id for i in live))  # one read per distinct user
    row_of = {u: r for r, u in enumerate(users)}
    recent_rows = lte_rows = None
    version_as_of: float | None = None
    store_error = None
    try:
        if users and recent_ref:
            recent_rows = features.read(recent_ref, users)
        if users and lte_ref:
            lte_rows = features.read(lte_ref, users, ["lte"])
            version_as_of = features.client.version(lte_ref).window.as_of.timestamp()
    except (FeatureNotOnline, OSError, ConnectionError) as exc:
        store_error = f"feature store unavailable: {type(exc).__name__}"
        log.warning("feature read failed for %s: %s", model.label, exc)
    except Exception as exc:  # redis.exceptions.* do not all derive from OSError
        if type(exc).__module__.startswith("redis"):
            store_error = f"feature store unavailable: {type(exc).__name__}"
        else:
            raise
    max_len = int(model.params["max_len"])
    # The sequence starts where the LTE's horizon ends: the as-of of the LTE value used minus the lag
    # (models/sequential/features.py), exactly as in training. No LTE view: no boundary (SASRec).
    lag = float(model.params.get("lag_seconds") or 0) if lte_ref else None
    lte_dim = int(model.params.get("lte_dim") or 0)
    n_items = len(model.item_ids)
    rows: list[tuple[int, np.ndarray, np.ndarray | None, set[int]]] = []  # (request, item_seq, lte, seen)
    for i in live:
        body = bodies[i]
        try:
            recent_ids: list[str] = []
            recent_ts: list[int] = []
            lte = None
            r = row_of[body.user_id]
            if store_error is None and recent_rows is not None and recent_rows.present[r]:
                recent_ids = list(recent_rows.values["item_ids"][r])  # type: ignore[index]
                recent_ts = list(recent_rows.values["timestamps"][r])  # type: ignore[index]
            lte_as_of = version_as_of  # a user without a row: the version's as-of (zeros LTE)
            if store_error is None and lte_rows is not None and lte_rows.present[r]:
                lte = lte_rows.values["lte"][r]  # type: ignore[index]
                ts = lte_rows.event_ts[r]
                lte_as_of = ts.timestamp() if ts is not None else version_as_of
            now = int(now_ts[i])
            request_items = [x for x in (body.recent_items or []) if x in model.item_index]
            if request_items:
                recent_ids = recent_ids + request_items
                recent_ts = recent_ts + [now] * len(request_items)
            seen = {model.item_index[x] for x in recent_ids if x in model.item_index} if body.exclude_seen else set()
            fallback_reason = store_error
            if fallback_reason is None and not recent_ids and lte is None:
                fallback_reason = "unknown user: no recent items and no LTE at the pinned versions"
            if fallback_reason is not None:
                ranked = [int(x) for x in model.popular if int(x) not in seen][: body.k]
                results[i] = {
                    "user_id": body.user_id,
                    "items": [{"item_id": str(model.item_ids[x]), "score": 0.0} for x in ranked],
                    "model": model.name,
                    "model_version": model.version,
                    "feature_versions": model.feature_refs,
                    "fallback": True,
                    "fallback_reason": fallback_reason,
                }
                continue
            item_seq, lte_vec = build_inputs(
                recent_ids, recent_ts, lte, model.item_index, max_len, lte_as_of, lag, lte_dim
            )
            rows.append((i, item_seq, lte_vec, seen))
        except Exception as exc:
            results[i] = exc
    if rows:
        try:
            outcomes = _run_rows(model, rows, n_items)
        except Exception as exc:  # a lone row's inference failed: that request only
            outcomes = [exc] * len(rows)
        for (i, _, _, _), outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, Exception):
                results[i] = outcome
                continue
            scores, idx = outcome
            k = bodies[i].k
            results[i] = {
                "user_id": bodies[i].user_id,
                "items": [
                    {"item_id": str(model.item_ids[x]), "score": sc}
                    for sc, x in zip(scores[:k].tolist(), idx[:k].tolist(), strict=True)
                    if math.isfinite(sc)
                ],
                "model": model.name,
                "model_version": model.version,
                "feature_versions": model.feature_refs,
                "fallback": False,
                "fallback_reason": None,
            }
    return [r if r is not None else RuntimeError("request left unanswered") for r in results]


def _feeds(rows: Sequence[tuple[int, np.ndarray, np.ndarray | None, set[int]]], n_items: int) -> dict[str, np.ndarray]:
    """Stack per-request inputs on the graph's dynamic batch axis."""
    exclude = np.zeros((len(rows), n_items), dtype=bool)
    exclude[:, 0] = True  # the padding index is never an answer
    for b, (_, _, _, seen) in enumerate(rows):
        if seen:
            exclude[b, list(seen)] = True
    feeds: dict[str, np.ndarray] = {"item_seq": np.stack([r[1] for r in rows]), "exclude": exclude}
    if rows[0][2] is not None:  # one model version: every row has an LTE or none does
        feeds["lte"] = np.stack([r[2] for r in rows]).astype(np.float32, copy=False)  # type: ignore[misc]
    return feeds


def _run_rows(
    model: LoadedModel, rows: Sequence[tuple[int, np.ndarray, np.ndarray | None, set[int]]], n_items: int
) -> list[tuple[np.ndarray, np.ndarray] | Exception]:
    """One ONNX call for all rows; if it fails, each row alone, so one bad row fails only itself."""
    start = time.perf_counter()
    try:
        scores, idx = model.run(_feeds(rows, n_items))
    except Exception:
        if len(rows) == 1:
            raise
        log.exception("batched inference of %d rows failed for %s; retrying row by row", len(rows), model.label)
        out: list[tuple[np.ndarray, np.ndarray] | Exception] = []
        for row in rows:
            try:
                out.extend(_run_rows(model, [row], n_items))
            except Exception as exc:
                out.append(exc)
        return out
    INFERENCE_LATENCY.labels(SERVICE, model.name, str(model.version)).observe(time.perf_counter() - start)
    return [(scores[b], idx[b]) for b in range(len(rows))]


def build_app(
    settings: SequentialSettings | None = None,
    fs_settings: FeatureStoreSettings | None = None,
    registry: Any | None = None,
) -> FastAPI:
    settings = settings or SequentialSettings()
    fs_settings = fs_settings or FeatureStoreSettings()
    router = APIRouter(tags=["recommend"], route_class=LeanJSONRoute)
    served = ServedModel(
        SERVICE, settings.model_name, settings.default_model_ref, settings.onnx_threads, fs_settings, registry
    )

    def run(model: LoadedModel, items: list[tuple[RecommendRequest, float]]) -> list[Answer | Exception]:
        return recommend_batch(model, served.features, [it[0] for it in items], [it[1] for it in items])

    batcher: BatcherPerVersion[LoadedModel, tuple[RecommendRequest, float], Answer]
    batcher = BatcherPerVersion(run, settings, SERVICE)

    @router.post("/v1/recommend", response_model=RecommendResponse, responses=error_responses(400, 404, 422))
    async def recommend_route(body: RecommendRequest, request: Request) -> Answer:
        if body.recent_items is not None and len(body.recent_items) > settings.max_recent_items:
            raise ApiError(
                422,
                "too_many_recent_items",
                f"{len(body.recent_items)} recent_items; at most {settings.max_recent_items}",
            )
        model = await served.resolve(body.model_version)
        request.state.model, request.state.model_version = model.name, str(model.version)
        top_k = int(model.params.get("top_k", 100))
        if body.k > top_k:  # refused before it takes a place in a batch
            raise ApiError(422, "k_too_large", f"k={body.k} exceeds this model's top_k={top_k}")
        now = time.time()
        if not settings.batching:
            return await run_in_threadpool(recommend, model, served.features, body, now)
        return await batcher(model).submit((body, now))

    routers = [router, served.admin_router(settings)]
    return create_app(SERVICE, routers, ready=served.readiness, lifespan=lambda app: served.running())


def app_factory() -> FastAPI:
    """uvicorn entry point: ``uvicorn --factory services.sequential.app:app_factory``."""
    return build_app()
