"""CTR ranking service: calibrated click probabilities for a user's candidates, served from ONNX.

POST /v1/score {user_id, candidates: [item_id ...], context: {...}, model_version?}
  -> the model's pinned feature versions read once per view (the user's row; every candidate's row),
     each field assembled from its source (models/ctr/features.py), encoded with the model's own
     vocabularies (fields.json), ONE ONNX call over all candidates, candidates ranked by probability.

Context handling (documented behaviour, counted, never silent):
* a context key the model has no field for is ignored, listed in the response's ``ignored_context``
  and counted in ``recsys_ctr_ignored_context_total{field}``;
* a known field that is absent, or whose value the model never saw, takes the field's
  out-of-vocabulary id (the default every CTR model reserves), counted in
  ``recsys_ctr_default_values_total{field}``.
While the online store is unreachable, feature fields take their defaults too and the answer is
flagged ``degraded``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from feature_store.config import FeatureStoreSettings
from feature_store.online import FeatureNotOnline
from models.ctr.data import FieldSpec, encode_rows
from models.ctr.features import FieldSource, context_fields, parse_sources, transform
from services.kit.app import create_app
from services.kit.auth import admin_token_dependency
from services.kit.errors import ApiError, error_responses
from services.kit.features import ServiceFeatureClient
from services.kit.metrics import INFERENCE_LATENCY
from services.kit.models import LoadedModel, ModelLoader
from services.kit.routes import LeanJSONRoute
from services.kit.settings import ServiceSettings

SERVICE = "ctr"
log = logging.getLogger(__name__)

IGNORED_CONTEXT = Counter("recsys_ctr_ignored_context_total", "Context keys the model has no field for", ["field"])
DEFAULT_VALUES = Counter(
    "recsys_ctr_default_values_total", "Field values absent or unseen in training, scored as the default", ["field"]
)
VERSION_PATTERN = r"^(v?[0-9]+|[a-z][a-z0-9_-]*)$"


class CTRSettings(ServiceSettings):
    service_name: str = SERVICE
    model_name: str = "ctr-ssr"
    default_model_ref: str = "champion"
    onnx_threads: int = 1
    # One request's candidates are one ONNX batch; this bounds its memory and latency.
    max_candidates: int = Field(default=1000, ge=1, le=100_000)


ContextValue = str | int | float | bool


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, examples=["u00042"])
    candidates: list[str] = Field(min_length=1, description="item ids to score (at most the service's limit)")
    context: dict[str, ContextValue] = Field(default_factory=dict, max_length=64, examples=[{"device": "mobile"}])
    model_version: str | None = Field(default=None, pattern=VERSION_PATTERN, description="version number or alias")


class ScoredCandidate(BaseModel):
    item_id: str
    probability: float


class ScoreResponse(BaseModel):
    user_id: str
    items: list[ScoredCandidate] = Field(description="every candidate, by descending probability")
    model: str
    model_version: int
    feature_versions: list[str]
    ignored_context: list[str] = Field(default_factory=list, description="context keys the model has no field for")
    defaulted_fields: dict[str, int] = Field(
        default_factory=dict, description="field -> candidates whose value was absent or unseen (scored as default)"
    )
    degraded: bool = False
    degraded_reason: str | None = None


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_version: str = Field(pattern=VERSION_PATTERN)


class CTRModel:
    """A loaded CTR version with what scoring needs beside the graph (cached per version)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.spec = FieldSpec.from_dict(json.loads((model.path / "fields.json").read_text()))
        sources = model.params.get("field_sources")
        if not sources:
            raise ValueError(f"{model.label}: params.json has no field_sources; cannot assemble its fields")
        self.sources = parse_sources(sources)
        missing = [f.name for f in self.spec.categorical + self.spec.numeric if f.name not in sources]
        if missing:
            raise ValueError(f"{model.label}: no source for fields {missing}")
        self.context_fields = context_fields(self.sources)


def score(ctr: CTRModel, features: ServiceFeatureClient, body: ScoreRequest) -> ScoreResponse:
    """The request path: pinned features -> rows -> one ONNX call -> ranked candidates."""
    model = ctr.model
    n = len(body.candidates)
    ignored = sorted(k for k in body.context if k not in ctr.context_fields)
    for key in ignored:
        IGNORED_CONTEXT.labels(key).inc()
    columns: dict[str, list[object]] = {}
    degraded_reason = None
    by_ref: dict[str, list[FieldSource]] = {}
    for src in ctr.sources:
        if src.kind == "request":
            value = body.user_id if src.name == "user_id" else None
            columns[src.field] = (
                [transform(src.transform, c) for c in body.candidates]
                if src.name == "item_id"
                else [transform(src.transform, value)] * n
            )
        elif src.kind == "context":
            columns[src.field] = [transform(src.transform, body.context.get(src.name))] * n
        else:
            by_ref.setdefault(src.ref, []).append(src)  # type: ignore[arg-type]
    for ref, srcs in by_ref.items():
        try:
            entity = features.client.version(ref).entity
            ids = [body.user_id] if entity == "user" else body.candidates
            rows = features.read(ref, ids, [s.name for s in srcs])
        except (FeatureNotOnline, OSError, ConnectionError) as exc:
            degraded_reason = f"feature store unavailable: {type(exc).__name__}"
            rows = None
        except Exception as exc:  # redis.exceptions.* do not all derive from OSError
            if not type(exc).__module__.startswith("redis"):
                raise
            degraded_reason = f"feature store unavailable: {type(exc).__name__}"
            rows = None
        for s in srcs:
            if rows is None:
                columns[s.field] = [None] * n
                continue
            values = rows.values[s.name]
            present = rows.present
            vals = [transform(s.transform, values[i]) if present[i] else None for i in range(len(ids))]  # type: ignore[index]
            columns[s.field] = vals * n if entity == "user" else vals
    records = [{f: col[i] for f, col in columns.items()} for i in range(n)]
    ids_matrix, numeric, defaulted = encode_rows(ctr.spec, records)
    for field, count in defaulted.items():
        if count:
            DEFAULT_VALUES.labels(field).inc(count)
    feeds: dict[str, np.ndarray] = {"feature_ids": ids_matrix}
    if numeric is not None:
        feeds["numeric"] = numeric
    start = time.perf_counter()
    (prob,) = model.outputs(["probability"], feeds)
    INFERENCE_LATENCY.labels(SERVICE, model.name, str(model.version)).observe(time.perf_counter() - start)
    order = np.argsort(-prob, kind="stable")
    probs = prob.tolist()
    return ScoreResponse.model_validate(
        {
            "user_id": body.user_id,
            "items": [{"item_id": body.candidates[i], "probability": probs[i]} for i in order.tolist()],
            "model": model.name,
            "model_version": model.version,
            "feature_versions": model.feature_refs,
            "ignored_context": ignored,
            "defaulted_fields": {f: c for f, c in defaulted.items() if c},
            "degraded": degraded_reason is not None,
            "degraded_reason": degraded_reason,
        }
    )


def build_app(
    settings: CTRSettings | None = None,
    fs_settings: FeatureStoreSettings | None = None,
    registry: Any | None = None,
) -> FastAPI:
    settings = settings or CTRSettings()
    fs_settings = fs_settings or FeatureStoreSettings()
    router = APIRouter(tags=["score"], route_class=LeanJSONRoute)
    admin = APIRouter(tags=["admin"])
    state: dict[str, Any] = {}
    prepared: dict[tuple[str, int], CTRModel] = {}

    def ctr_model(model: LoadedModel) -> CTRModel:
        key = (model.name, model.version)
        if key not in prepared:
            prepared[key] = CTRModel(model)
        return prepared[key]

    def load(ref: str) -> CTRModel:
        loader: ModelLoader = state["loader"]
        try:
            return ctr_model(loader.get(settings.model_name, ref))
        except LookupError as exc:
            raise ApiError(404, "unknown_model_version", str(exc)) from exc

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from models.registry import ModelRegistry

        reg = registry or ModelRegistry.from_settings(fs_settings)
        state["loader"] = ModelLoader(reg, threads=settings.onnx_threads)
        state["features"] = ServiceFeatureClient.from_settings(SERVICE, fs_settings)
        try:  # warm the default version so the first request does not pay for loading it
            load(settings.default_model_ref)
        except Exception as exc:
            state["load_error"] = str(exc)
        yield
        state["features"].close()

    @router.post("/v1/score", responses=error_responses(400, 404, 422))
    async def score_route(body: ScoreRequest) -> ScoreResponse:
        if len(body.candidates) > settings.max_candidates:
            raise ApiError(
                422,
                "too_many_candidates",
                f"{len(body.candidates)} candidates; at most {settings.max_candidates} per request",
                {"limit": settings.max_candidates},
            )
        ref = body.model_version or settings.default_model_ref
        loaded = state["loader"].peek(settings.model_name, ref)
        ctr = ctr_model(loaded) if loaded is not None else await run_in_threadpool(load, ref)
        return await run_in_threadpool(score, ctr, state["features"], body)

    @admin.post(
        "/v1/admin/load",
        dependencies=[Depends(admin_token_dependency(settings))],
        responses=error_responses(400, 401, 403, 404, 422),
    )
    def load_version(body: LoadRequest) -> dict[str, Any]:
        """Pre-flight of a deploy: load (and hash-verify) a version so it is warm before any alias moves."""
        ctr = load(body.model_version)
        return {
            "loaded": ctr.model.label,
            "inputs": sorted(ctr.model.input_names),
            "feature_refs": ctr.model.feature_refs,
        }

    def ready() -> tuple[bool, dict[str, Any]]:
        loader: ModelLoader | None = state.get("loader")
        loaded = loader.loaded() if loader else []
        details: dict[str, Any] = {"loaded": loaded}
        if "load_error" in state and not loaded:
            details["error"] = state["load_error"]
        return bool(loaded), details

    return create_app(SERVICE, [router, admin], ready=ready, lifespan=lifespan)


def app_factory() -> FastAPI:
    """uvicorn entry point: ``uvicorn --factory services.ctr.app:app_factory``."""
    return build_app()
