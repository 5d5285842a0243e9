"""The in-process transport (embedded mode) answers like the service over HTTP would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import APIRouter, Header, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from services.kit.app import create_app
from services.kit.errors import ApiError
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
