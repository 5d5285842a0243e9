"""The in-process transport (embedded mode) answers like the service over HTTP would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import APIRouter, Header, Request
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import BaseModel

from services.kit.app import create_app
from services.kit.errors import ApiError
from services.kit.routes import LeanJSONRoute
from services.kit.transport import InProcessTransport, ServiceUnavailable


class Body(BaseModel):
    k: int


def _app() -> Any:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: Body, request: Request, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        if body.k < 0:
            raise ApiError(400, "negative_k", "k must be >= 0")
        return {"k": body.k, "auth": authorization, "q": request.url.query}

    @router.post("/text")
    def text() -> PlainTextResponse:
        return PlainTextResponse("not json", status_code=502)

    @router.post("/boom")
    def boom() -> None:
        raise RuntimeError("bug")

    return create_app("svc", [router])


def test_calls_go_through_the_services_app_like_http() -> None:
    t = InProcessTransport({"svc": _app()})

    async def main() -> None:
        assert await t.post("svc", "/echo?x=1", {"k": 3}, 1.0, {"Authorization": "Bearer t"}) == (
            200,
            {"k": 3, "auth": "Bearer t", "q": "x=1"},
        )
        status, body = await t.post("svc", "/echo", {"k": -1}, 1.0)
        assert status == 400 and body["error"]["code"] == "negative_k"
        status, body = await t.post("svc", "/echo", {"k": "x"}, 1.0)
        assert status == 422 and body["error"]["code"] == "invalid_request"
        status, body = await t.post("svc", "/nope", {}, 1.0)
        assert status == 404
        status, body = await t.post("svc", "/text", {}, 1.0)
        assert status == 502 and body["error"]["code"] == "bad_response" and "not json" in body["error"]["message"]
        with pytest.raises(ServiceUnavailable):
            await t.post("other", "/echo", {"k": 1}, 1.0)
        with pytest.raises(RuntimeError, match="bug"):  # as httpx's ASGITransport did: app errors propagate
            await t.post("svc", "/boom", {}, 1.0)
        await t.aclose()

    asyncio.run(main())


class Scored(BaseModel):
    k: int
    tag: str | None


def _lean_app() -> Any:
    router = APIRouter(route_class=LeanJSONRoute)

    @router.post("/score")
    async def score(body: Body, request: Request, x_tag: str | None = Header(default=None)) -> Scored:
        if body.k == 13:
            raise RuntimeError("unlucky")
        if body.k < 0:
            raise ApiError(400, "negative_k", "k must be >= 0")
        request.state.model, request.state.model_version = "m", "7"
        return Scored(k=body.k, tag=x_tag)

    return create_app("lean-svc", [router])


def _requests_seen(status: str) -> float:
    value = REGISTRY.get_sample_value(
        "recsys_request_seconds_count",
        {"service": "lean-svc", "route": "/score", "method": "POST", "status": status, "model": "m", "version": "7"},
    )
    return value or 0.0


def test_hot_routes_are_called_directly_with_the_same_answers_errors_and_metrics() -> None:
    app = _lean_app()
    t = InProcessTransport({"svc": app})
    http = TestClient(app)  # over ASGI: the kit app dispatches the same route directly

    async def main() -> None:
        before = _requests_seen("200")
        assert await t.post("svc", "/score", {"k": 3}, 1.0, {"X-Tag": "qa"}) == (200, {"k": 3, "tag": "qa"})
        assert _requests_seen("200") == before + 1
        for body in ({"k": -1}, {"k": "x"}, {"k": 13}):
            status, answer = await t.post("svc", "/score", body, 1.0)
            over_http = http.post("/score", json=body)
            assert (status, answer) == (over_http.status_code, over_http.json())
        # An unhandled error is the service's 500 answer, as over HTTP, so the gateway falls back.
        assert (await t.post("svc", "/score", {"k": 13}, 1.0))[0] == 500

    asyncio.run(main())
