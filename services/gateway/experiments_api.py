"""The experiments admin API: ``/v1/experiments``, mounted by the gateway app.

Every route needs the admin token (``Authorization: Bearer <token>``; 401 without one, 403 when
wrong) because an experiment decides what every user is served. Errors are the kit's structured
JSON; the store's errors map to 404 (unknown key), 409 (duplicate key, version conflict, surface or
namespace conflict, impossible transition) and 422 (invalid definition, unknown model target).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.experiments import (
    Experiment,
    ExperimentCreate,
    ExperimentError,
    ExperimentEvent,
    ExperimentStore,
    Status,
    TargetValidator,
)
from services.kit.auth import admin_token_dependency
from services.kit.errors import ApiError, error_responses
from services.kit.settings import ServiceSettings

T = TypeVar("T")
DEFAULT_ACTOR = "admin"
Actor = Annotated[str | None, Header(alias="X-Actor", description="who is making the change; default admin")]


class ExperimentPatch(BaseModel):
    """``version`` is the version the change was based on (optimistic concurrency); every other field
    is an ExperimentSpec field to replace (``key`` and ``status`` cannot be patched)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"version": 3, "coverage": 0.5, "reason": "ramp up"}]},
    )

    version: Annotated[int, Field(ge=0)]
    reason: Annotated[str, Field(max_length=2000)] = ""


class ActionBody(BaseModel):
    """Optional body of pause/resume/stop: an expected ``version`` (checked when given) and a reason."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[int | None, Field(ge=0)] = None
    reason: Annotated[str, Field(max_length=2000)] = ""


class ExperimentList(BaseModel):
    experiments: list[Experiment]


class ExperimentHistory(BaseModel):
    key: str
    events: list[ExperimentEvent]


def actor_from(x_actor: str | None) -> str:
    """Who made a change, for the history. Self-declared (the token proves admin, not identity)."""
    actor = (x_actor or "").strip()
    if not actor:
        return DEFAULT_ACTOR
    if len(actor) > 128 or not actor.isprintable():
        raise ApiError(422, "invalid_request", "X-Actor must be at most 128 printable characters")
    return actor


def _call(fn: Callable[[], T]) -> T:
    """Store errors become the kit's structured errors with their status and code."""
    try:
        return fn()
    except ExperimentError as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.details) from None


def experiments_router(
    store: ExperimentStore, settings: ServiceSettings, target_validator: TargetValidator | None = None
) -> APIRouter:
    """The admin router over ``store``. ``target_validator`` checks that each variant's model and
    alias/version exist (the gateway passes ``registry_target_validator(registry, services)``)."""
    admin = admin_token_dependency(settings)
    router = APIRouter(
        prefix="/v1/experiments",
        tags=["experiments"],
        dependencies=[Depends(admin)],
        responses=error_responses(400, 401, 403, 404, 409, 422),
    )

    def create(body: ExperimentCreate, x_actor: Actor = None) -> Experiment:
        return _call(lambda: store.create(body, actor_from(x_actor), target_validator=target_validator))

    # Both spellings, so `curl -X POST .../v1/experiments/` does not get a 307 it will not follow.
    router.add_api_route("", create, methods=["POST"], status_code=201, summary="Create an experiment")
    router.add_api_route("/", create, methods=["POST"], status_code=201, include_in_schema=False)

    def list_experiments(
        surface: Annotated[str | None, Query(description="only this surface")] = None,
        status: Annotated[Status | None, Query(description="only this status")] = None,
    ) -> ExperimentList:
        return ExperimentList(experiments=store.list(surface=surface, status=status))

    router.add_api_route("", list_experiments, methods=["GET"], summary="List experiments")
    router.add_api_route("/", list_experiments, methods=["GET"], include_in_schema=False)

    @router.get("/{key}", summary="One experiment")
    def get_experiment(key: str) -> Experiment:
        return _call(lambda: store.get(key))

    @router.patch("/{key}", summary="Change an experiment (optimistic concurrency on version)")
    def update_experiment(key: str, body: ExperimentPatch, x_actor: Actor = None) -> Experiment:
        changes: dict[str, Any] = dict(body.model_extra or {})
        actor = actor_from(x_actor)
        return _call(
            lambda: store.update(key, changes, body.version, actor, body.reason, target_validator=target_validator)
        )

    @router.post("/{key}/pause", summary="running -> paused")
    def pause(key: str, body: ActionBody | None = None, x_actor: Actor = None) -> Experiment:
        b = body or ActionBody()
        return _call(lambda: store.pause(key, actor_from(x_actor), b.version, b.reason))

    @router.post("/{key}/resume", summary="paused or draft -> running")
    def resume(key: str, body: ActionBody | None = None, x_actor: Actor = None) -> Experiment:
        b = body or ActionBody()
        return _call(
            lambda: store.resume(key, actor_from(x_actor), b.version, b.reason, target_validator=target_validator)
        )

    @router.post("/{key}/stop", summary="-> stopped (final)")
    def stop(key: str, body: ActionBody | None = None, x_actor: Actor = None) -> Experiment:
        b = body or ActionBody()
        return _call(lambda: store.stop(key, actor_from(x_actor), b.version, b.reason))

    @router.get("/{key}/history", summary="Every change, newest first")
    def history(key: str) -> ExperimentHistory:
        return ExperimentHistory(key=key, events=_call(lambda: store.history(key)))

    return router
