"""Next-basket service: CASE over each user's purchase-day history, served from ONNX.

POST /v1/recommend {user_id, as_of?, k, model_version?}
  -> reads the user's ``purchase_history`` row at exactly the version the model pins, keeps the
     purchases strictly before ``as_of``, builds the candidates and the purchase-day matrix with
     ``models.basket.features`` (the training code), scores them in one ONNX call per micro-batch
     and returns the top k with scores, model and feature versions and the as-of day used.

``as_of`` (a calendar date, UTC days) is the day the basket is predicted for. Only purchases on
earlier days are used, so an ``as_of`` before the feature snapshot's own as-of never sees a later
purchase. Accepted range, per pinned version (see :func:`as_of_window`):

* at most ``basket_max_days_after_snapshot`` (default 90) days after the snapshot's reference day:
  further out the user has almost surely bought things the view does not know, so the ranking
  would be a guess presented as a prediction -> 422 ``as_of_too_late``;
* no earlier than ``reference day - (history_days - horizon)`` (364 days back with the default
  view): earlier days would need purchases the view no longer keeps in full -> 422
  ``as_of_too_early``.

Omitted ``as_of`` means today (UTC), or the snapshot's reference day with
``RECSYS_BASKET_DEFAULT_AS_OF=snapshot`` (historical data such as the demo's 2024 synthetic year).
An omitted ``as_of`` outside the range is the server's staleness, not a client error: the answer is
the popularity fallback, flagged. So is an unknown user, a user with no purchase before ``as_of``,
and every user while the online store is unreachable.

Purchases that arrive between version builds are merged into the online value by
``feature_store.pipelines.purchases.record_purchases`` (the ``recsys features record-purchases``
command), not by an endpoint here: that write goes through Feast, whose import costs this process
about 4.5 s of CPU and 300 MB per worker (measured), on the request path's cores. The service reads
the online store on every request, so the next answer sees the merge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from feature_store.config import FeatureStoreSettings
from feature_store.online import FeatureNotOnline
from feature_store.versions import parse_ref
from services.basket.scoring import Ranked, date_of, day_number_of, history_before, rank_histories
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

SERVICE = "basket"
VIEW = "purchase_history"
HORIZON_DAYS = 364
DEFAULT_HISTORY_DAYS = 2 * HORIZON_DAYS
log = logging.getLogger(__name__)


class BasketSettings(ServiceSettings):
    """``RECSYS_``-prefixed like every service; the basket-only ones start with ``basket_``
    (``RECSYS_BASKET_DEFAULT_AS_OF``...), so the embedded demo can run it next to the others."""

    service_name: str = SERVICE
    basket_model_name: str = "case"
    basket_default_model_ref: str = "champion"
    basket_default_as_of: Literal["today", "snapshot"] = "today"
    basket_max_days_after_snapshot: int = Field(default=90, ge=0, le=HORIZON_DAYS)
    basket_max_k: int = Field(default=100, ge=1, le=1024)
    onnx_threads: int = 1


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, examples=["u0005"])
    as_of: date | None = Field(
        default=None,
        strict=True,  # only "YYYY-MM-DD": a timestamp or a number is refused, not silently truncated
        description="the day the basket is predicted for (UTC); only purchases before it are used; default today",
        examples=["2024-12-31"],
    )
    k: int = Field(default=10, ge=1, le=1024, description="number of items; at most the service's basket_max_k")
    model_version: str | None = Field(
        default=None, pattern=MODEL_VERSION_PATTERN, description="a version number or an alias"
    )


class BasketItem(BaseModel):
    item_id: str
    score: float
    repeat: bool = Field(description="the user bought it before as_of (a repurchase candidate)")


class RecommendResponse(BaseModel):
    user_id: str
    items: list[BasketItem]
    model: str
    model_version: int
    feature_versions: list[str]
    as_of: date
    fallback: bool = False
    fallback_reason: str | None = None


@dataclass(frozen=True)
class AsOfWindow:
    """The as-of days a pinned purchase_history version answers for (UTC day numbers, inclusive)."""

    ref: str
    reference_day: int  # the day after the last day the snapshot has data for
    earliest_day: int
    latest_day: int


def purchase_ref(model: LoadedModel) -> str:
    for ref in model.feature_refs:
        if parse_ref(ref)[0] == VIEW:
            return ref
    raise RuntimeError(f"{model.label} pins no {VIEW} version; it is not a basket model")


def _snapshot_day(as_of: datetime) -> int:
    """``feature_store.pipelines.purchases.snapshot_day`` without importing pandas-heavy build code."""
    us = int(as_of.replace(tzinfo=as_of.tzinfo or UTC).timestamp() * 1_000_000) - 1
    return us // 86_400_000_000 + 1


def as_of_window(features: ServiceFeatureClient, ref: str, max_days_after: int) -> AsOfWindow:
    spec = features.client.version(ref)  # cached by the client: specs are immutable
    reference = _snapshot_day(spec.window.as_of)
    history_days = int(spec.params.get("history_days") or DEFAULT_HISTORY_DAYS)
    horizon = int(spec.params.get("horizon_days") or HORIZON_DAYS)
    return AsOfWindow(
        ref=spec.ref,
        reference_day=reference,
        earliest_day=reference - max(history_days - horizon, 0),
        latest_day=reference + max_days_after,
    )


@dataclass
class Job:
    """One request, validated and with its as-of resolved, waiting for its batch."""

    body: RecommendRequest
    as_of_day: int
    stale_reason: str | None = None  # an omitted as_of fell outside the window: flagged fallback


def _fallback(model: LoadedModel, job: Job, reason: str) -> RecommendResponse:
    ranked = [int(x) for x in model.popular[: job.body.k]]
    return RecommendResponse(
        user_id=job.body.user_id,
        items=[BasketItem(item_id=str(model.item_ids[x]), score=0.0, repeat=False) for x in ranked],
        model=model.name,
        model_version=model.version,
        feature_versions=model.feature_refs,
        as_of=date_of(job.as_of_day),
        fallback=True,
        fallback_reason=reason,
    )


def recommend_batch(
    model: LoadedModel, features: ServiceFeatureClient, jobs: Sequence[Job]
) -> list[RecommendResponse | Exception]:
    """The request path for several requests of one model version, answered as if each ran alone.

    One multi-entity read of the pinned purchase_history version -> each request's purchases
    before its as-of -> ONE ONNX call over the requests that need the model -> top k each (or each
    request's flagged fallback). Returns one response or exception per request, in order.
    """
    n = len(jobs)
    results: list[RecommendResponse | Exception | None] = [None] * n
    ref = purchase_ref(model)
    users = list(dict.fromkeys(j.body.user_id for j in jobs if j.stale_reason is None))
    row_of = {u: r for r, u in enumerate(users)}
    rows = None
    store_error = None
    try:
        if users:
            rows = features.read(ref, users)
    except (FeatureNotOnline, OSError, ConnectionError) as exc:
        store_error = f"feature store unavailable: {type(exc).__name__}"
        log.warning("feature read failed for %s: %s", model.label, exc)
    except Exception as exc:  # redis.exceptions.* do not all derive from OSError
        if type(exc).__module__.startswith("redis"):
            store_error = f"feature store unavailable: {type(exc).__name__}"
        else:
            raise
    todo: list[tuple[int, list[tuple[str, int]]]] = []  # (request, history before its as-of)
    for i, job in enumerate(jobs):
        try:
            reason = job.stale_reason or store_error
            history: list[tuple[str, int]] = []
            if reason is None and rows is not None:
                r = row_of[job.body.user_id]
                if not rows.present[r]:
                    reason = f"unknown user: no purchase history at {ref}"
                else:
                    history = history_before(
                        rows.values["item_ids"][r],  # type: ignore[index]
                        rows.values["days"][r],  # type: ignore[index]
                        job.as_of_day,
                    )
                    if not any(i_ in model.item_index for i_, _ in history):
                        reason = "no purchase of a known item before as_of"
            if reason is not None:
                results[i] = _fallback(model, job, reason)
            else:
                todo.append((i, history))
        except Exception as exc:
            results[i] = exc
    if todo:
        outcomes = _rank(model, jobs, todo)
        for (i, _), outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, Exception):
                results[i] = outcome
                continue
            job = jobs[i]
            # One validation for the whole response (nested dicts), not one per item.
            results[i] = RecommendResponse.model_validate(
                {
                    "user_id": job.body.user_id,
                    "items": [
                        {"item_id": item, "score": score, "repeat": rep}
                        for item, score, rep in zip(outcome.item_ids, outcome.scores, outcome.repeat, strict=True)
                        if math.isfinite(score)
                    ],
                    "model": model.name,
                    "model_version": model.version,
                    "feature_versions": model.feature_refs,
                    "as_of": date_of(job.as_of_day),
                }
            )
    return [r if r is not None else RuntimeError("request left unanswered") for r in results]


def _rank(
    model: LoadedModel, jobs: Sequence[Job], todo: Sequence[tuple[int, list[tuple[str, int]]]]
) -> list[Ranked | Exception]:
    """One ONNX call for all rows; if it fails, each row alone, so one bad row fails only itself."""
    try:
        ranked, seconds = rank_histories(
            model, [h for _, h in todo], [jobs[i].as_of_day for i, _ in todo], [jobs[i].body.k for i, _ in todo]
        )
    except Exception as exc:
        if len(todo) == 1:
            return [exc]
        log.exception("batched inference of %d rows failed for %s; retrying row by row", len(todo), model.label)
        out: list[Ranked | Exception] = []
        for row in todo:
            out.extend(_rank(model, jobs, [row]))
        return out
    INFERENCE_LATENCY.labels(SERVICE, model.name, str(model.version)).observe(seconds)
    return list(ranked)


def resolve_as_of(
    body: RecommendRequest, window: AsOfWindow, settings: BasketSettings, today: date | None = None
) -> Job:
    """The request's as-of day, or a 422 for a client-chosen day outside ``window`` (module doc)."""
    if body.as_of is None:
        if settings.basket_default_as_of == "snapshot":
            day = window.reference_day
        else:
            day = day_number_of(today or datetime.now(UTC).date())
        stale = None
        if not window.earliest_day <= day <= window.latest_day:
            stale = (
                f"stale features: the default as_of {date_of(day)} is outside {window.ref}'s range "
                f"{date_of(window.earliest_day)}..{date_of(window.latest_day)}"
            )
        return Job(body, day, stale)
    day = day_number_of(body.as_of)
    if day > window.latest_day:
        raise ApiError(
            422,
            "as_of_too_late",
            f"as_of {body.as_of} is more than {settings.basket_max_days_after_snapshot} days after the purchase "
            f"history snapshot ({window.ref}, data up to {date_of(window.reference_day - 1)}); latest accepted "
            f"{date_of(window.latest_day)}",
        )
    if day < window.earliest_day:
        raise ApiError(
            422,
            "as_of_too_early",
            f"as_of {body.as_of} is before {date_of(window.earliest_day)}, the earliest day {window.ref} "
            "keeps a full purchase window for",
        )
    return Job(body, day)


def build_app(
    settings: BasketSettings | None = None,
    fs_settings: FeatureStoreSettings | None = None,
    registry: Any | None = None,
    features: ServiceFeatureClient | None = None,
) -> FastAPI:
    """The service; ``registry`` and ``features`` replace the ones built from the settings (tests)."""
    settings = settings or BasketSettings()
    fs_settings = fs_settings or FeatureStoreSettings()
    router = APIRouter(tags=["recommend"], route_class=LeanJSONRoute)
    served = ServedModel(
        SERVICE,
        settings.basket_model_name,
        settings.basket_default_model_ref,
        settings.onnx_threads,
        fs_settings,
        registry,
        features,
    )
    windows: dict[str, AsOfWindow] = {}

    def window_of(model: LoadedModel) -> AsOfWindow:
        ref = purchase_ref(model)
        w = windows.get(ref)
        if w is None:
            w = windows[ref] = as_of_window(served.features, ref, settings.basket_max_days_after_snapshot)
        return w

    batcher: BatcherPerVersion[LoadedModel, Job, RecommendResponse]
    batcher = BatcherPerVersion(lambda model, jobs: recommend_batch(model, served.features, jobs), settings, SERVICE)

    @router.post("/v1/recommend", responses=error_responses(400, 404, 422))
    async def recommend_route(body: RecommendRequest, request: Request) -> RecommendResponse:
        if body.k > settings.basket_max_k:
            raise ApiError(
                422, "k_too_large", f"k={body.k} exceeds this service's basket_max_k={settings.basket_max_k}"
            )
        model = await served.resolve(body.model_version)
        request.state.model, request.state.model_version = model.name, str(model.version)
        ref = purchase_ref(model)
        window = windows.get(ref)
        if window is None:  # first use of this version reads the catalog: off the loop
            window = await run_in_threadpool(window_of, model)
        job = resolve_as_of(body, window, settings)
        if not settings.batching:
            (result,) = await run_in_threadpool(recommend_batch, model, served.features, [job])
            if isinstance(result, BaseException):
                raise result
            return result
        return await batcher(model).submit(job)

    def describe(model: LoadedModel) -> dict[str, Any]:
        w = window_of(model)
        return {"as_of_range": [date_of(w.earliest_day).isoformat(), date_of(w.latest_day).isoformat()]}

    routers = [router, served.admin_router(settings, describe)]
    return create_app(SERVICE, routers, ready=served.readiness, lifespan=lambda app: served.running())


def app_factory() -> FastAPI:
    """uvicorn entry point: ``uvicorn --factory services.basket.app:app_factory``."""
    return build_app()
