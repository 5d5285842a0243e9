"""LeanJSONRoute answers exactly as FastAPI's generic route does (same OpenAPI, same errors)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from services.kit.app import create_app
from services.kit.errors import ApiError
from services.kit.routes import MAX_BODY_BYTES, LeanJSONRoute


class EchoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    k: int = Field(default=3, ge=1, le=10)


class EchoOut(BaseModel):
    name: str
    k: int
    tag: str | None
    path: str


def _app(route_class: type | None) -> FastAPI:
    router = APIRouter(route_class=route_class) if route_class else APIRouter()

    @router.post("/echo")
    async def echo(body: EchoIn, request: Request, x_tag: str | None = Header(default=None)) -> EchoOut:
        if body.name == "teapot":
            raise ApiError(418, "teapot", "no coffee here")
        return EchoOut(name=body.name, k=body.k, tag=x_tag, path=request.url.path)

    return create_app("t", [router])


@pytest.fixture(params=[None, LeanJSONRoute], ids=["fastapi", "lean"])
def client(request: pytest.FixtureRequest) -> TestClient:
    return TestClient(_app(request.param))


def test_same_answers_as_the_generic_route(client: TestClient) -> None:
    r = client.post("/echo", json={"name": "a"}, headers={"X-Tag": "qa"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == {"name": "a", "k": 3, "tag": "qa", "path": "/echo"}
    assert client.post("/echo", json={"name": "b", "k": 5}).json()["tag"] is None


def test_same_errors_as_the_generic_route(client: TestClient) -> None:
    bad = client.post("/echo", json={"name": "", "k": 99, "extra": 1})
    assert bad.status_code == 422
    fields = sorted(d["field"] for d in bad.json()["error"]["details"])
    assert fields == ["extra", "k", "name"]
    assert bad.json()["error"]["code"] == "invalid_request"
    broken = client.post("/echo", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422
    teapot = client.post("/echo", json={"name": "teapot"})
    assert teapot.status_code == 418 and teapot.json()["error"]["code"] == "teapot"


def test_openapi_is_unchanged() -> None:
    generic, lean = _app(None).openapi(), _app(LeanJSONRoute).openapi()
    assert generic["paths"]["/echo"] == lean["paths"]["/echo"]


def test_endpoints_it_cannot_serve_are_refused_at_startup() -> None:
    router = APIRouter(route_class=LeanJSONRoute)
    with pytest.raises(TypeError, match="query parameters"):

        @router.post("/q")
        async def with_query(body: EchoIn, limit: int = 3) -> dict:
            return {}

    with pytest.raises(TypeError, match="dependencies"):

        @router.post("/d", dependencies=[Depends(lambda: None)])
        async def with_dependency(body: EchoIn) -> dict:
            return {}


def test_oversized_bodies_are_refused_with_413() -> None:
    client = TestClient(_app(LeanJSONRoute))
    big = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = client.post("/echo", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert client.post("/echo", json={"name": "small"}).status_code == 200
