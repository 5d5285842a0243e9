"""Service kit: structured errors, admin auth, health/readiness, metrics."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.kit.app import create_app
from services.kit.auth import admin_token_dependency
from services.kit.errors import ApiError
from services.kit.settings import ServiceSettings


class Body(BaseModel):
    k: int


def _app(token: str | None = "s3cret", ready: bool = True) -> TestClient:
    settings = ServiceSettings(admin_token=token)
    router = APIRouter()
    admin = admin_token_dependency(settings)

    @router.post("/echo")
    def echo(body: Body) -> dict[str, int]:
        if body.k < 0:
            raise ApiError(400, "negative_k", "k must be >= 0")
        return {"k": body.k}

    @router.post("/admin", dependencies=[Depends(admin)])
    def admin_call() -> dict[str, str]:
        return {"ok": "yes"}

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("bug")

    app = create_app("test", [router], ready=lambda: (ready, {"why": "x"}))
    return TestClient(app, raise_server_exceptions=False)


def test_validation_errors_are_structured_4xx() -> None:
    c = _app()
    r = c.post("/echo", json={"k": "abc"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and "k" in err["message"]
    r = c.post("/echo", json={"k": -1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "negative_k"
    assert c.post("/echo", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422


def test_unhandled_errors_are_json_500() -> None:
    r = _app().get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"


def test_admin_token() -> None:
    c = _app()
    assert c.post("/admin").status_code == 401
    assert c.post("/admin", headers={"Authorization": "Basic abc"}).status_code == 401
    assert c.post("/admin", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert c.post("/admin", headers={"Authorization": "Bearer s3cret"}).json() == {"ok": "yes"}
    # No token configured: closed, not open.
    assert _app(token=None).post("/admin", headers={"Authorization": "Bearer s3cret"}).status_code == 403


def test_health_ready_metrics() -> None:
    c = _app(ready=False)
    assert c.get("/healthz").json()["status"] == "ok"
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["error"]["details"] == {"why": "x"}
    assert _app().get("/readyz").status_code == 200
    c.post("/echo", json={"k": 1})
    text = c.get("/metrics").text
    assert 'recsys_request_seconds_count{method="POST",model="",route="/echo",service="test",status="200"' in text


def test_objects_alive_after_startup_are_frozen_while_serving() -> None:
    """Full collections must not walk the service's startup objects (models, imports) under load."""
    loaded: list[object] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded.append({"model": list(range(1000))})  # what a service loads at startup
        yield

    gc.unfreeze()
    with TestClient(create_app("t", [], lifespan=lifespan)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # stopped serving: collectable again
