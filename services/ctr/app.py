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
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from feature_store.config import FeatureStoreSettings
from feature_store.online import FeatureNotOnline
from models.ctr.data import CategoricalField, FieldSpec, encode_rows, raw_key
from models.ctr.features import FieldSource, context_fields, parse_sources, transform
from services.kit.app import create_app
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

SERVICE = "ctr"
log = logging.getLogger(__name__)

IGNORED_CONTEXT = Counter("recsys_ctr_ignored_context_total", "Context keys the model has no field for", ["field"])
DEFAULT_VALUES = Counter(
    "recsys_ctr_default_values_total", "Field values absent or unseen in training, scored as the default", ["field"]
)


class CTRSettings(ServiceSettings):
    service_name: str = SERVICE
    model_name: str = "ctr-ssr"
    default_model_ref: str = "champion"
    onnx_threads: int = 1
    # One request's candidates are one ONNX batch; this bounds its memory and latency.
    max_candidates: int = Field(default=1000, ge=1, le=100_000)
    # Item feature rows are cached this long (0: read every request). Bounds how stale an item's
    # features may be after its version is materialized again.
    item_feature_ttl_s: float = Field(default=30.0, ge=0.0, le=3600.0)


ContextValue = str | int | float | bool


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, examples=["u00042"])
    candidates: list[str] = Field(min_length=1, description="item ids to score (at most the service's limit)")
    context: dict[str, ContextValue] = Field(default_factory=dict, max_length=64, examples=[{"device": "mobile"}])
    model_version: str | None = Field(
        default=None, pattern=MODEL_VERSION_PATTERN, description="version number or alias"
    )


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


def _ids(field: CategoricalField, values: list[object]) -> tuple[np.ndarray, int]:
    """A column of raw values -> global ids, and how many took the field's default (absent or unseen)."""
    vocab, default = field.values, field.default_id
    # Strings (ids, categories) are their own vocabulary key; anything else goes through raw_key.
    out = np.fromiter(
        (vocab.get(v if type(v) is str else raw_key(v), default) for v in values), dtype=np.int64, count=len(values)
    )
    return out, int((out == default).sum())


def _read_values(
    features: ServiceFeatureClient, ref: str, srcs: list[FieldSource], ids: list[str]
) -> tuple[list[tuple[object, ...]], str | None]:
    """Each entity's transformed field values (None where the store has no row), or all None and why."""
    try:
        rows = features.read(ref, ids, [src.name for src in srcs])
    except (FeatureNotOnline, OSError, ConnectionError) as exc:
        return [(None,) * len(srcs)] * len(ids), f"feature store unavailable: {type(exc).__name__}"
    except Exception as exc:  # redis.exceptions.* do not all derive from OSError
        if not type(exc).__module__.startswith("redis"):
            raise
        return [(None,) * len(srcs)] * len(ids), f"feature store unavailable: {type(exc).__name__}"
    cols = [rows.values[src.name] for src in srcs]
    return [
        tuple(transform(src.transform, col[i]) for src, col in zip(srcs, cols, strict=True))  # type: ignore[index]
        if rows.present[i]
        else (None,) * len(srcs)
        for i in range(len(ids))
    ], None


class EntityValueCache:
    """Transformed field values of item rows per pinned view, kept ``ttl_s`` seconds.

    Every request scores candidates from the same catalogue, so the same item rows are read again
    and again; they change only when their version is materialized again, so a short TTL bounds
    the staleness. Only rows actually read are kept (an absent row is cached as absent, also for at
    most ``ttl_s``); a failed read caches nothing. At ``max_entries`` the cache starts over.
    """

    def __init__(self, ttl_s: float, max_entries: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._rows: dict[tuple[object, str], tuple[float, tuple[object, ...]]] = {}

    def get_many(self, key: object, ids: list[str]) -> list[tuple[object, ...] | None]:
        now = time.monotonic()
        out: list[tuple[object, ...] | None] = []
        for entity in ids:
            hit = self._rows.get((key, entity))
            out.append(hit[1] if hit is not None and hit[0] > now else None)
        return out

    def put_many(self, key: object, ids: list[str], values: list[tuple[object, ...]]) -> None:
        if len(self._rows) + len(ids) > self.max_entries:
            self._rows = {}
        expires = time.monotonic() + self.ttl_s
        for entity, row in zip(ids, values, strict=True):
            self._rows[(key, entity)] = (expires, row)


def score(
    ctr: CTRModel, features: ServiceFeatureClient, body: ScoreRequest, cache: EntityValueCache | None = None
) -> ScoreResponse:
    """The request path: pinned features -> one id column per field -> one ONNX call -> ranked candidates.

    Fields that are the same for every candidate (the user's, the context's) are looked up once and
    broadcast; per-candidate fields (item id, item features) are looked up column-wise.
    """
    model = ctr.model
    n = len(body.candidates)
    ignored = sorted(k for k in body.context if k not in ctr.context_fields)
    for key in ignored:
        IGNORED_CONTEXT.labels(key).inc()
    # field -> one value for all candidates (a 1-tuple) or a list with one value per candidate
    columns: dict[str, tuple[object] | list[object]] = {}
    degraded_reason = None
    by_ref: dict[str, list[FieldSource]] = {}
    for src in ctr.sources:
        if src.kind == "request" and src.name == "item_id":
            columns[src.field] = [transform(src.transform, c) for c in body.candidates]
        elif src.kind == "request":
            columns[src.field] = (transform(src.transform, body.user_id),)
        elif src.kind == "context":
            columns[src.field] = (transform(src.transform, body.context.get(src.name)),)
        else:
            by_ref.setdefault(src.ref, []).append(src)  # type: ignore[arg-type]
    for ref, srcs in by_ref.items():
        per_user = features.client.version(ref).entity == "user"
        ids = [body.user_id] if per_user else body.candidates
        key = (ref, tuple((src.name, src.transform) for src in srcs))
        # Item rows are shared by every user's request: served from the cache when fresh.
        cached = cache.get_many(key, ids) if cache is not None and not per_user else [None] * len(ids)
        missing = [i for i, hit in enumerate(cached) if hit is None]
        if missing:
            fetched, error = _read_values(features, ref, srcs, [ids[i] for i in missing])
            if error is not None:
                degraded_reason = error
            elif cache is not None and not per_user:
                cache.put_many(key, [ids[i] for i in missing], fetched)
            for i, values in zip(missing, fetched, strict=True):
                cached[i] = values
        for k, src in enumerate(srcs):
            vals = [row[k] for row in cached]  # type: ignore[index]
            columns[src.field] = (vals[0],) if per_user else vals
    spec = ctr.spec
    feature_ids = np.empty((n, len(spec.categorical)), dtype=np.int64)
    defaulted: dict[str, int] = {}
    for j, f in enumerate(spec.categorical):
        col = columns[f.name]
        ids_col, n_default = _ids(f, list(col))
        feature_ids[:, j] = ids_col  # a 1-element column broadcasts to every candidate
        if n_default:
            defaulted[f.name] = n_default * (n if len(col) == 1 else 1)
    feeds: dict[str, np.ndarray] = {"feature_ids": feature_ids}
    if spec.numeric:
        rows_num = [
            {f.name: columns[f.name][0 if len(columns[f.name]) == 1 else i] for f in spec.numeric} for i in range(n)
        ]
        _, numeric, unknown = encode_rows(FieldSpec(categorical=[], numeric=spec.numeric), rows_num)
        feeds["numeric"] = numeric  # type: ignore[assignment]
        defaulted |= {k: v for k, v in unknown.items() if v}
    for field, count in defaulted.items():
        DEFAULT_VALUES.labels(field).inc(count)
    start = time.perf_counter()
    (prob,) = model.outputs(["probability"], feeds)
    INFERENCE_LATENCY.labels(SERVICE, model.name, str(model.version)).observe(time.perf_counter() - start)
    order = np.argsort(-prob, kind="stable").tolist()
    probs = prob.tolist()
    return ScoreResponse.model_validate(
        {
            "user_id": body.user_id,
            "items": [{"item_id": body.candidates[i], "probability": probs[i]} for i in order],
            "model": model.name,
            "model_version": model.version,
            "feature_versions": model.feature_refs,
            "ignored_context": ignored,
            "defaulted_fields": defaulted,
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
    prepared: dict[tuple[str, int], CTRModel] = {}
    item_cache = EntityValueCache(settings.item_feature_ttl_s) if settings.item_feature_ttl_s > 0 else None

    def ctr_model(model: LoadedModel) -> CTRModel:
        key = (model.name, model.version)
        if key not in prepared:
            prepared[key] = CTRModel(model)
        return prepared[key]

    # A version whose fields cannot be assembled fails when it loads (deploy pre-flight), not on a request.
    served = ServedModel(
        SERVICE,
        settings.model_name,
        settings.default_model_ref,
        settings.onnx_threads,
        fs_settings,
        registry,
        prepare=ctr_model,
    )

    @router.post("/v1/score", responses=error_responses(400, 404, 422))
    async def score_route(body: ScoreRequest) -> ScoreResponse:
        if len(body.candidates) > settings.max_candidates:
            raise ApiError(
                422,
                "too_many_candidates",
                f"{len(body.candidates)} candidates; at most {settings.max_candidates} per request",
                {"limit": settings.max_candidates},
            )
        ctr = ctr_model(await served.resolve(body.model_version))
        return await run_in_threadpool(score, ctr, served.features, body, item_cache)

    routers = [router, served.admin_router(settings)]
    return create_app(SERVICE, routers, ready=served.readiness, lifespan=lambda app: served.running())


def app_factory() -> FastAPI:
    """uvicorn entry point: ``uvicorn --factory services.ctr.app:app_factory``."""
    return build_app()
