"""HTTP read API over the versioned feature store.

GET  /v1/features/versions            every version with its spec and online status
POST /v1/features/read                {ref, entity_ids, features?} -> values per entity
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from feature_store.config import FeatureStoreSettings
from feature_store.online import FeatureNotOnline
from feature_store.versions import VersionCatalog
from services.kit.app import create_app
from services.kit.errors import ApiError, error_responses
from services.kit.features import ServiceFeatureClient
from services.kit.settings import ServiceSettings

SERVICE = "features"


class ReadRequest(BaseModel):
    ref: str = Field(
        description="pinned feature version, e.g. 'lte_avg@v1' or 'lte_avg@v1:lte'", examples=["lte_avg@v1"]
    )
    entity_ids: list[str] = Field(min_length=1, description="entity ids (user_id, item_id ...)")
    features: list[str] | None = Field(default=None, description="subset of the version's features")


class EntityValues(BaseModel):
    entity_id: str
    present: bool
    event_timestamp: datetime | None
    values: dict[str, Any]


class ReadResponse(BaseModel):
    ref: str
    store: str
    rows: list[EntityValues]


def _jsonable(v: object) -> object:
    if isinstance(v, np.ndarray):
        return [round(float(x), 6) for x in v]
    return v


def build_app(settings: ServiceSettings | None = None, fs_settings: FeatureStoreSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings(service_name=SERVICE)
    fs_settings = fs_settings or FeatureStoreSettings()
    catalog = VersionCatalog(fs_settings.catalog_dir)
    router = APIRouter(prefix="/v1/features", tags=["features"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.features = ServiceFeatureClient.from_settings(SERVICE, fs_settings)
        yield
        app.state.features.close()

    @router.get("/versions")
    def versions() -> list[dict[str, Any]]:
        out = []
        for spec in catalog.all_versions():
            status = catalog.status(spec.view, spec.version)
            out.append({"ref": spec.ref, **spec.model_dump(mode="json"), "status": status.model_dump(mode="json")})
        return out

    @router.post("/read", responses=error_responses(400, 404, 422))
    def read(body: ReadRequest, request: Request) -> ReadResponse:
        if len(body.entity_ids) > settings.max_entities_per_request:
            raise ApiError(
                422,
                "too_many_entities",
                f"{len(body.entity_ids)} entity ids; at most {settings.max_entities_per_request} per request",
            )
        client: ServiceFeatureClient = request.app.state.features
        try:
            rows = client.read(body.ref, body.entity_ids, body.features)
        except FeatureNotOnline as exc:
            raise ApiError(409, "feature_not_online", str(exc)) from exc
        out = [
            EntityValues(
                entity_id=e,
                present=bool(rows.present[i]),
                event_timestamp=rows.event_ts[i],
                values={k: _jsonable(v) for k, v in rows.row(i).items()},
            )
            for i, e in enumerate(rows.entity_ids)
        ]
        return ReadResponse(ref=rows.ref, store=client.store, rows=out)

    def ready() -> tuple[bool, dict[str, Any]]:
        online = [v.ref for v in catalog.all_versions() if catalog.status(v.view, v.version).state == "online"]
        return bool(online), {"online_versions": online}

    return create_app(SERVICE, [router], ready=ready, lifespan=lifespan)


def app_factory() -> FastAPI:
    """uvicorn entry point: ``uvicorn --factory services.features.app:app_factory``."""
    return build_app()
