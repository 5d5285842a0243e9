"""The app factory every service uses: errors, metrics, health and readiness in one call.

A service passes its routers and a readiness check; /healthz says the process is up,
/readyz says it can serve (models loaded, online store reachable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from services.kit.errors import error_body, install_error_handlers
from services.kit.metrics import install_metrics, worker_exiting

ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _with_worker_exit(lifespan: Lifespan | None) -> Lifespan:
    """The service's lifespan, then the metrics bookkeeping of a process that stops serving."""

    @asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            worker_exiting()

    return wrapped


def create_app(
    name: str,
    routers: Sequence[APIRouter],
    ready: ReadyCheck | None = None,
    lifespan: Lifespan | None = None,
    version: str = "0.1.0",
) -> FastAPI:
    app = FastAPI(title=f"recsys {name}", version=version, lifespan=_with_worker_exit(lifespan))
    install_error_handlers(app)
    install_metrics(app, name)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        ok, details = ready() if ready else (True, {})
        if ok:
            return JSONResponse({"status": "ready", "service": name, **details})
        return JSONResponse(error_body("not_ready", f"{name} is not ready", details), status_code=503)

    ops_routes = list(app.router.routes)
    for router in routers:
        app.include_router(router)
    # Starlette tries routes in order, and the docs, /metrics, /healthz and /readyz come first; put
    # the service's own routes (the hot ones) ahead of them: each miss costs a regex match per request.
    # (Paths do not overlap, so the order changes nothing else; OpenAPI lists routes by path.)
    app.router.routes[:] = [r for r in app.router.routes if r not in ops_routes] + ops_routes
    return app
