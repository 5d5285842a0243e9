"""The app factory every service uses: errors, metrics, health and readiness in one call.

A service passes its routers and a readiness check; /healthz says the process is up,
/readyz says it can serve (models loaded, online store reachable).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from services.kit.errors import error_body, install_error_handlers
from services.kit.metrics import install_metrics, worker_exiting
from services.kit.routes import LeanJSONRoute

ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _freeze_startup_objects() -> None:
    """Collect once, then move everything alive after startup out of the collector's reach.

    A service process holds millions of long-lived objects once its imports (torch, pandas,
    SQLAlchemy, pydantic), models and caches are loaded, and every full (generation 2) collection
    walked all of them: 45-52 ms per collection in the gateway and the sequential service under
    load (measured with ``gc.callbacks``), a stall that put single 20-60 ms outliers into p99.
    After ``gc.freeze()`` a full collection only walks what was allocated since (CPython's
    documented use: objects that live for the whole process). Startup garbage is collected first,
    so nothing freed later is kept.
    """
    gc.collect()
    gc.freeze()


def _with_worker_exit(lifespan: Lifespan | None) -> Lifespan:
    """The service's lifespan, then the metrics bookkeeping of a process that stops serving."""

    @asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        try:
            if lifespan is None:
                _freeze_startup_objects()
                yield
            else:
                async with lifespan(app):
                    _freeze_startup_objects()
                    yield
        finally:
            gc.unfreeze()  # the app stops serving: its objects may be garbage now (matters in tests)
            worker_exiting()

    return wrapped


class ServiceApp(FastAPI):
    """FastAPI, plus direct dispatch of the hot routes.

    A request whose method and exact path belong to a ``LeanJSONRoute`` is answered by that route
    straight away (services/kit/routes.py: same validation, errors and metrics, none of the
    framework's layers); everything else (admin, ops, docs, 404/405) goes through FastAPI as usual.
    """

    service_name: str = ""
    hot_routes: Mapping[tuple[str, str], LeanJSONRoute] = MappingProxyType({})

    def hot_route(self, method: str, path: str) -> LeanJSONRoute | None:
        return self.hot_routes.get((method, path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.root_path:
            route = self.hot_route(scope["method"], scope["path"])
            if route is not None:
                await route.serve(self, self.service_name, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    name: str,
    routers: Sequence[APIRouter],
    ready: ReadyCheck | None = None,
    lifespan: Lifespan | None = None,
    version: str = "0.1.0",
) -> ServiceApp:
    # Metrics are Prometheus (services/kit/metrics.py). FastAPI's native OpenTelemetry stays off: its
    # per-request "is a provider configured?" check alone was ~6% of the gateway's CPU under load.
    app = ServiceApp(
        title=f"recsys {name}",
        version=version,
        lifespan=_with_worker_exit(lifespan),
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.service_name = name
    # The routers' own LeanJSONRoutes, included without prefix or dependencies (those would be on the
    # route itself, which LeanJSONRoute refuses), so (method, path) is exactly what FastAPI matches.
    app.hot_routes = {
        (method, route.path): route
        for router in routers
        for route in router.routes
        if isinstance(route, LeanJSONRoute)
        for method in route.methods
    }
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

    for router in routers:
        app.include_router(router)
    return app
