"""Structured JSON errors: every failure a client sees is ``{"error": {code, message, details}}``.

Bad input is a 4xx that says what is wrong; a 500 means a bug, and still answers in JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from feature_store.versions import FeatureStoreError, UnknownFeatureVersion

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


_MEANING = {
    400: "bad request (e.g. a malformed header)",
    401: "admin token missing or malformed",
    403: "admin token rejected",
    404: "unknown resource (surface, model version, experiment, feature version)",
    409: "conflict with the current state (version moved, pre-flight refused, duplicate key)",
    422: "invalid input; the message names the field and what is wrong",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the errors a route can answer, all with the kit's error body."""
    return {s: {"model": ErrorResponse, "description": _MEANING.get(s, "error")} for s in statuses}


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = err.get("msg", "invalid")
        details.append({"field": loc or "body", "message": msg})
        parts.append(f"{loc or 'body'}: {msg}")
    return "invalid request: " + "; ".join(parts), details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_message(exc)
        return JSONResponse(error_body("invalid_request", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(UnknownFeatureVersion)
    async def _unknown_version(_: Request, exc: UnknownFeatureVersion) -> JSONResponse:
        available = [f"{exc.view}@v{v}" for v in exc.available]
        return JSONResponse(error_body("unknown_feature_version", str(exc), {"available": available}), 404)

    @app.exception_handler(FeatureStoreError)
    async def _feature_store(_: Request, exc: FeatureStoreError) -> JSONResponse:
        return JSONResponse(error_body("feature_store_error", str(exc)), status_code=400)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal error; see service logs"), status_code=500)
