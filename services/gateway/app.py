"""The gateway: experiments, routing to recommender services, degraded fallbacks, exposures.

POST /v1/recommendations {user_id, surface, k, context}
  1. the running experiments on ``surface`` assign a variant (sticky, namespaces, coverage,
     conditions on ``context``; ``X-Force-Variant: exp=variant`` for QA);
  2. the variant's target (service, model, alias|version) is called through the transport (pooled
     HTTP in microservice mode, in-process ASGI in embedded mode), behind a circuit breaker;
  3. shadow variants get a copy of the request, bounded by their own timeout and never awaited;
  4. if the target fails, the experiment's control answers, else the surface model's shipped
     popularity ranking, flagged ``degraded``;
  5. the exposure is counted in metrics and appended to the exposure log (JSON lines).

POST /v1/assignments {user_id, surface, context}
  step 1 only (the same code: sticky store, namespaces, coverage, conditions, forced header) ->
  {experiment, variant, target}; no service call, no exposure (client-side experiments, QA).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Request
from prometheus_client import Counter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from feature_store.config import FeatureStoreSettings
from models.registry.registry import MAX_VERSION_NUMBER
from services.gateway.experiments import Experiment, ExperimentCache, ExperimentStore, Target, assign_sticky
from services.kit.app import create_app
from services.kit.breaker import CircuitBreaker
from services.kit.errors import ApiError, error_responses
from services.kit.routes import LeanJSONRoute
from services.kit.settings import ServiceSettings
from services.kit.transport import HttpTransport, ServiceUnavailable, Transport

SERVICE = "gateway"
log = logging.getLogger(__name__)

EXPOSURES = Counter("recsys_exposures_total", "Recommendation responses by experiment arm", ["experiment", "variant"])
DEGRADED = Counter("recsys_degraded_total", "Responses served by a fallback", ["surface", "reason"])
SHADOW_CALLS = Counter("recsys_shadow_calls_total", "Shadow variant calls", ["experiment", "variant", "outcome"])


DEFAULT_SURFACES: dict[str, Target] = {
    "home": Target(service="sequential", model="seq-lte", ref="champion"),
    "home-ranked": Target(
        service="sequential",
        model="seq-lte",
        ref="champion",
        rerank={"service": "ctr", "model": "ctr-ssr", "ref": "champion", "candidates": 100},
    ),
    "basket": Target(service="basket", model="case", ref="champion"),
}


class GatewaySettings(ServiceSettings):
    service_name: str = SERVICE
    # service name -> base URL (microservice mode), e.g. RECSYS_SERVICES='{"sequential": "http://127.0.0.1:8001"}'
    services: dict[str, str] = Field(
        default_factory=lambda: {
            "sequential": "http://127.0.0.1:8001",
            "ctr": "http://127.0.0.1:8003",
            "basket": "http://127.0.0.1:8004",
        }
    )
    # surface -> default route, used when no experiment runs on the surface (and for the fallback ranking).
    # The demo's: "home" (sequential), "home-ranked" (sequential candidates re-ranked by the CTR model),
    # "basket" (next-basket repurchase).
    surfaces: dict[str, Target] = Field(default_factory=lambda: dict(DEFAULT_SURFACES))
    request_timeout_s: float = 0.5
    shadow_timeout_s: float = 0.2
    max_shadow_in_flight: int = 64
    breaker_failures: int = 5
    breaker_reset_s: float = 2.0
    exposure_log: Path | None = None  # default: <data_dir>/exposures.jsonl


class RecommendationsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256)
    surface: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$", examples=["home"])
    k: int = Field(default=10, ge=1, le=100)
    context: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=32)


class RecommendationsResponse(BaseModel):
    user_id: str
    surface: str
    items: list[dict[str, Any]]
    experiment: str | None
    variant: str | None
    model: str | None
    model_version: int | None
    feature_versions: list[str]
    stages: list[dict[str, Any]] | None = Field(
        default=None, description="a two-stage target's stages in order (candidates, then ranker); null otherwise"
    )
    degraded: bool = False
    degraded_reason: str | None = None


class AssignmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256)
    surface: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$", examples=["home"])
    context: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=32)


class AssignmentResponse(BaseModel):
    user_id: str
    surface: str
    experiment: str | None = Field(description="the experiment the user is in on this surface, or null")
    variant: str | None = Field(description="the user's variant of that experiment, or null")
    target: Target = Field(description="where /v1/recommendations sends this user's request")


@dataclass(frozen=True, slots=True)
class Route:
    """The outcome of step 1 for one request: the surface's default route, the experiment arm, the target."""

    default: Target
    experiment: Experiment | None
    variant: str | None
    target: Target


class ExposureLog:
    """Append-only JSON lines, written in batches by a background thread.

    A request only appends to an in-memory list; the writer drains it every ``flush_interval_s``.
    Waking the writer per request (a queue ``put``) cost ~40 us of the gateway's CPU per request
    under load (cProfile, wrk), for a log nobody reads within 100 ms. A clean shutdown drains
    everything; a killed process loses at most the last interval.
    """

    def __init__(self, path: Path, flush_interval_s: float = 0.1) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval_s = flush_interval_s
        self._buf: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exposure-log", daemon=True)
        self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._buf.append(record)

    def _drain(self, fh: Any) -> None:
        with self._lock:
            batch, self._buf = self._buf, []
        if batch:
            fh.write("".join(json.dumps(rec, separators=(",", ":")) + "\n" for rec in batch))
            fh.flush()

    def _run(self) -> None:
        with self.path.open("a") as fh:
            while not self._stop.wait(self.flush_interval_s):
                self._drain(fh)
            self._drain(fh)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def parse_forced(header: str | None) -> dict[str, str]:
    """``X-Force-Variant: exp-a=treatment, exp-b=control`` -> {"exp-a": "treatment", ...}."""
    if not header:
        return {}
    out = {}
    for part in header.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep or not key or not val:
            raise ApiError(
                400, "bad_force_header", f"X-Force-Variant must look like 'experiment=variant', got {part!r}"
            )
        out[key.strip()] = val.strip()
    return out


class Gateway:
    """Routing state shared by the request handlers of one gateway process."""

    def __init__(self, settings: GatewaySettings, store: ExperimentStore, transport: Transport, registry: Any) -> None:
        self.settings = settings
        self.store = store
        self.cache = ExperimentCache(store)
        self.transport = transport
        self.registry = registry
        self.breakers: dict[str, CircuitBreaker] = {}
        self._popular: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._shadow_slots = asyncio.Semaphore(settings.max_shadow_in_flight)
        fs = FeatureStoreSettings()
        self.exposures = ExposureLog(settings.exposure_log or fs.data_dir / "exposures.jsonl")

    def breaker(self, service: str) -> CircuitBreaker:
        b = self.breakers.get(service)
        if b is None:
            b = self.breakers[service] = CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_reset_s)
        return b

    async def post(self, service: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One call to a service behind its breaker; raises ServiceUnavailable for anything worth falling back on."""
        breaker = self.breaker(service)
        if not breaker.allow():
            raise ServiceUnavailable(f"{service}: circuit open")
        try:
            status, payload = await self.transport.post(service, path, body, timeout)
        except ServiceUnavailable:
            breaker.record_failure()
            raise
        if status >= 500:
            breaker.record_failure()
            raise ServiceUnavailable(f"{service} answered {status}")
        breaker.record_success()
        if status >= 400:
            # The service understood and refused: a client error worth passing on, not falling back on.
            err = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise ApiError(status, err.get("code", "upstream_error"), err.get("message", f"{service}: {status}"))
        return payload

    async def call(
        self, target: Target, user_id: str, k: int, timeout: float, context: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A target's answer: its model's recommendations, re-ranked by its second stage if it has one."""
        rerank = target.rerank
        if rerank is None:
            return await self.post(
                target.service, "/v1/recommend", {"user_id": user_id, "k": k, "model_version": target.ref}, timeout
            )
        deadline = time.monotonic() + timeout
        first = await self.post(
            target.service,
            "/v1/recommend",
            {"user_id": user_id, "k": max(k, rerank.candidates), "model_version": target.ref},
            timeout,
        )
        stages = [{"service": target.service, "model": first.get("model"), "model_version": first.get("model_version")}]
        candidates = [it["item_id"] for it in first.get("items", [])]
        if not candidates:  # nothing to re-rank (e.g. the first stage's own fallback was empty)
            return {**first, "items": [], "stages": stages}
        body = {"user_id": user_id, "candidates": candidates, "context": context or {}, "model_version": rerank.ref}
        try:
            ranked = await self.post(rerank.service, "/v1/score", body, max(deadline - time.monotonic(), 0.001))
        except ServiceUnavailable as exc:
            # The ranker is down or slow: the first stage's own order, flagged, beats no answer.
            return {**first, "items": first["items"][:k], "stages": stages, "fallback": True,
                    "fallback_reason": f"re-ranking skipped: {exc}"}  # fmt: skip
        stages.append(
            {"service": rerank.service, "model": ranked.get("model"), "model_version": ranked.get("model_version")}
        )
        items = [{"item_id": it["item_id"], "score": it["probability"]} for it in ranked.get("items", [])[:k]]
        fallback_reason = first.get("fallback_reason") if first.get("fallback") else None
        if ranked.get("degraded"):
            fallback_reason = ranked.get("degraded_reason") or "ranker degraded"
        return {
            "items": items,
            "model": ranked.get("model"),
            "model_version": ranked.get("model_version"),
            "feature_versions": list(
                dict.fromkeys(first.get("feature_versions", []) + ranked.get("feature_versions", []))
            ),
            "stages": stages,
            "fallback": fallback_reason is not None,
            "fallback_reason": fallback_reason,
        }

    async def shadow(
        self, exp: Experiment, variant_key: str, target: Target, user_id: str, k: int, context: dict[str, Any]
    ) -> None:
        if self._shadow_slots.locked():
            SHADOW_CALLS.labels(exp.key, variant_key, "dropped").inc()
            return
        async with self._shadow_slots:
            try:
                await self.call(target, user_id, k, self.settings.shadow_timeout_s, context)
                SHADOW_CALLS.labels(exp.key, variant_key, "ok").inc()
            except (ServiceUnavailable, ApiError):
                SHADOW_CALLS.labels(exp.key, variant_key, "failed").inc()

    def popular(self, target: Target) -> list[str]:
        """The surface model's shipped popularity ranking (its artifact's popular.json), cached 60 s."""
        key = (target.model, target.ref)
        hit = self._popular.get(key)
        if hit and time.monotonic() - hit[0] < 60:
            return hit[1]
        try:
            mv = self.registry.resolve(target.model, target.ref)
            ids = json.loads((Path(mv.path) / "item_index.json").read_text())
            order = json.loads((Path(mv.path) / "popular.json").read_text())
            items = [ids[i] for i in order]
        except Exception as exc:  # a fallback of the fallback must not raise
            log.warning("no popularity ranking for %s@%s: %s", target.model, target.ref, exc)
            items = []
        self._popular[key] = (time.monotonic(), items)
        return items

    async def route(self, user_id: str, surface: str, context: dict[str, Any], forced: dict[str, str]) -> Route:
        """Step 1, shared by /v1/recommendations and /v1/assignments: the running experiments on
        ``surface`` assign a variant (sticky store, namespaces, coverage, conditions, forced variants)."""
        default = self.settings.surfaces.get(surface)
        if default is None:
            known = ", ".join(sorted(self.settings.surfaces))
            raise ApiError(404, "unknown_surface", f"unknown surface {surface!r}; configured: {known}")
        attrs = {"user_id": user_id, "surface": surface, **context}
        for exp in self.cache.running_for_surface(surface):
            a = await run_in_threadpool(assign_sticky, exp, attrs, forced, self.store.sticky)
            if a is None:
                continue
            if a.in_experiment or exp.key in forced:
                v = exp.variant(a.variant_key)
                if v is not None:
                    return Route(default, exp, v.key, v.target)
        return Route(default, None, None, default)

    async def recommend(self, body: RecommendationsRequest, forced: dict[str, str]) -> RecommendationsResponse:
        route = await self.route(body.user_id, body.surface, body.context, forced)
        default, chosen_exp, variant_key, target = route.default, route.experiment, route.variant, route.target
        if chosen_exp is not None:
            for sv in chosen_exp.shadows:
                asyncio.get_running_loop().create_task(
                    self.shadow(chosen_exp, sv.key, sv.target, body.user_id, body.k, body.context)
                )
        degraded_reason = None
        try:
            payload = await self.call(target, body.user_id, body.k, self.settings.request_timeout_s, body.context)
        except ServiceUnavailable as exc:
            degraded_reason = str(exc)
            payload = await self._fallback(chosen_exp, variant_key, body, default)
        if payload.get("fallback") and degraded_reason is None:
            degraded_reason = payload.get("fallback_reason") or "service fallback"
        resp = RecommendationsResponse(
            user_id=body.user_id,
            surface=body.surface,
            items=payload.get("items", []),
            experiment=chosen_exp.key if chosen_exp else None,
            variant=variant_key,
            model=payload.get("model"),
            model_version=payload.get("model_version"),
            feature_versions=payload.get("feature_versions", []),
            stages=payload.get("stages"),
            degraded=degraded_reason is not None,
            degraded_reason=degraded_reason,
        )
        self._expose(resp)
        return resp

    async def _fallback(
        self, exp: Experiment | None, variant_key: str | None, body: RecommendationsRequest, default: Target
    ) -> dict[str, Any]:
        """The experiment's control if it is a different target, else the popularity ranking."""
        if exp is not None and variant_key != exp.control:
            control = exp.variant(exp.control)
            if control is not None:
                try:
                    return await self.call(
                        control.target, body.user_id, body.k, self.settings.request_timeout_s, body.context
                    )
                except ServiceUnavailable:
                    pass
        DEGRADED.labels(body.surface, "popularity").inc()
        items = [{"item_id": i, "score": 0.0} for i in self.popular(default)[: body.k]]
        return {"items": items, "model": None, "model_version": None, "feature_versions": []}

    def _expose(self, resp: RecommendationsResponse) -> None:
        EXPOSURES.labels(resp.experiment or "", resp.variant or "").inc()
        self.exposures.append(
            {
                "ts": round(time.time(), 3),
                "user_id": resp.user_id,
                "surface": resp.surface,
                "experiment": resp.experiment,
                "variant": resp.variant,
                "model": resp.model,
                "model_version": resp.model_version,
                "degraded": resp.degraded,
            }
        )

    async def aclose(self) -> None:
        self.cache.stop()
        await self.transport.aclose()
        self.exposures.close()


def build_app(
    settings: GatewaySettings | None = None,
    transport: Transport | None = None,
    store: ExperimentStore | None = None,
    registry: Any | None = None,
    embedded: dict[str, FastAPI] | None = None,
) -> FastAPI:
    """The gateway app. ``embedded`` service apps run in this process (embedded mode)."""
    from models.registry import ModelRegistry
    from services.gateway.experiments import registry_target_validator
    from services.gateway.experiments_api import experiments_router
    from services.kit.transport import InProcessTransport, embedded_lifespans

    settings = settings or GatewaySettings()
    store = store or ExperimentStore()
    registry = registry or ModelRegistry.from_settings()
    if transport is None:
        transport = InProcessTransport(embedded) if embedded else HttpTransport(settings.services)
    gw = Gateway(settings, store, transport, registry)
    router = APIRouter(tags=["recommendations"], route_class=LeanJSONRoute)

    @router.post("/v1/recommendations", responses=error_responses(400, 404, 422))
    async def recommendations(
        body: RecommendationsRequest,
        request: Request,
        x_force_variant: str | None = Header(default=None),
    ) -> RecommendationsResponse:
        resp = await gw.recommend(body, parse_forced(x_force_variant))
        request.state.model, request.state.model_version = resp.model or "", str(resp.model_version or "")
        return resp

    @router.post("/v1/assignments", responses=error_responses(400, 404, 422))
    async def assignments(
        body: AssignmentRequest,
        x_force_variant: str | None = Header(default=None),
    ) -> AssignmentResponse:
        """The experiment arm ``/v1/recommendations`` would serve this user on this surface.

        Exactly the assignment code of /v1/recommendations (sticky store, namespaces, coverage,
        conditions on ``context``, ``X-Force-Variant``), and like it this records a fresh user's sticky
        assignment, so a later recommendation agrees. It calls no service and logs no exposure: the
        answer is for client-side experiments and QA, and the exposure is logged when (and if) the
        user is served. ``experiment``/``variant`` are null when the user is in no experiment.
        """
        route = await gw.route(body.user_id, body.surface, body.context, parse_forced(x_force_variant))
        return AssignmentResponse(
            user_id=body.user_id,
            surface=body.surface,
            experiment=route.experiment.key if route.experiment else None,
            variant=route.variant,
            target=route.target,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.cache.start()
        async with embedded_lifespans(embedded or {}):
            yield
        await gw.aclose()

    services = set(settings.services) | set(embedded or {})
    validator = registry_target_validator(registry, services=services)
    app = create_app(
        SERVICE,
        [router, experiments_router(store, settings, validator), models_router(settings, gw)],
        ready=lambda: (True, {"services": sorted(services)}),
        lifespan=lifespan,
    )
    app.state.gateway = gw
    return app


def _registry_alias(alias: str) -> str:
    """The registry's own rule (not 'latest', not version-like), checked before any pre-flight runs."""
    from models.registry.registry import check_alias_name

    check_alias_name(alias)  # AliasError is a ValueError: a 422 that states the rule
    return alias


AliasName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64), AfterValidator(_registry_alias)]


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=MAX_VERSION_NUMBER)
    alias: AliasName = "champion"
    reason: str = Field(default="", max_length=500)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: AliasName = "champion"
    to_version: int | None = Field(default=None, ge=1, le=MAX_VERSION_NUMBER)
    reason: str = Field(default="", max_length=500)


def rollout_context(settings: GatewaySettings, transport: Transport, registry: Any) -> Any:
    """What deploy/rollback need; the CLI builds the same thing (services/cli/rollout.py)."""
    from feature_store.online import make_client
    from services.gateway.rollout import RolloutContext

    fs = FeatureStoreSettings()
    client = make_client(fs)
    # Which service serves each model: the surfaces' routes, their re-ranking stages included.
    model_services = {t.model: t.service for t in settings.surfaces.values()}
    model_services |= {t.rerank.model: t.rerank.service for t in settings.surfaces.values() if t.rerank}
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    return RolloutContext(registry, client.catalog, client, transport, token, model_services)


def models_router(settings: GatewaySettings, gw: Gateway) -> APIRouter:
    """Deploy, rollback and inspection of models (admin token required)."""
    from fastapi import Depends

    from services.gateway.rollout import RolloutRefused, deploy, rollback
    from services.kit.auth import admin_token_dependency

    router = APIRouter(
        prefix="/v1/models",
        tags=["models"],
        dependencies=[Depends(admin_token_dependency(settings))],
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )
    ctx_holder: dict[str, Any] = {}

    def ctx() -> Any:
        if "ctx" not in ctx_holder:
            ctx_holder["ctx"] = rollout_context(settings, gw.transport, gw.registry)
        return ctx_holder["ctx"]

    def _lookup(exc: Exception) -> ApiError:
        return ApiError(404, "unknown_model", str(exc))

    @router.get("/{name}")
    def show(name: str) -> dict[str, Any]:
        try:
            versions = gw.registry.versions(name)
        except LookupError as exc:
            raise _lookup(exc) from exc
        if not versions:
            raise ApiError(404, "unknown_model", f"no model named {name!r}; known: {gw.registry.names()}")
        history = [ev.model_dump(mode="json") for ev in gw.registry.alias_history(name)]
        return {
            "name": name,
            "versions": [{"version": m.version, "feature_refs": [p.ref for p in m.feature_refs]} for m in versions],
            "aliases": gw.registry.aliases(name),
            "alias_history": history,
        }

    @router.post("/{name}/deploy")
    async def deploy_route(name: str, body: DeployRequest, x_actor: str | None = Header(default=None)) -> dict:
        try:
            return await deploy(ctx(), name, body.version, body.alias, x_actor or "admin", body.reason)
        except RolloutRefused as exc:
            raise ApiError(409, "deploy_refused", str(exc)) from exc
        except LookupError as exc:
            raise _lookup(exc) from exc

    @router.post("/{name}/rollback")
    async def rollback_route(name: str, body: RollbackRequest, x_actor: str | None = Header(default=None)) -> dict:
        try:
            return await rollback(ctx(), name, body.alias, body.to_version, x_actor or "admin", body.reason)
        except RolloutRefused as exc:
            raise ApiError(409, "rollback_refused", str(exc)) from exc
        except LookupError as exc:
            raise _lookup(exc) from exc

    return router


def app_factory() -> FastAPI:
    """uvicorn entry point (microservice mode): ``uvicorn --factory services.gateway.app:app_factory``."""
    return build_app()


def embedded_app_factory() -> FastAPI:
    """Gateway and the recommender services in one process, called in-process (the demo)."""
    from services.basket.app import build_app as build_basket
    from services.ctr.app import build_app as build_ctr
    from services.sequential.app import build_app as build_sequential

    return build_app(embedded={"sequential": build_sequential(), "ctr": build_ctr(), "basket": build_basket()})
