"""Prometheus metrics shared by all services.

Request latency by route/model/version, feature read latency, inference latency, errors.

Several worker processes (``services.commands.service_command(..., workers=N)``): set
PROMETHEUS_MULTIPROC_DIR. Every process then writes its values to files in that directory and
``/metrics``, whichever worker answers it, sums all of them (prometheus_client multiprocess mode).
What that needs, and where it happens:

* the directory is emptied once, in the master before any worker starts (``services/kit/serve.py``):
  files left by an earlier run would be summed into this run's counters;
* a gauge must say how processes combine (``multiprocess_mode``; ``livesum`` for "current total"),
  else each pid becomes its own series, dead ones included (tests/unit/test_metrics_multiprocess.py
  checks every gauge the services define);
* a worker that stops removes its live-gauge files (``worker_exiting``, from the app's lifespan: a
  uvicorn worker ends by re-raising its shutdown signal, so atexit handlers never run); one that
  was killed cannot, so a scrape removes those of pids that no longer run. Counter and histogram files
  of dead workers stay on purpose: totals must never go down while the service runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# prometheus_client chooses per-process file-backed values when a metric is created, if
# PROMETHEUS_MULTIPROC_DIR is set then. Decide how to expose them at that same moment: importing
# Feast later sets the variable for its own use and must not switch this process's /metrics.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
MULTIPROC_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) if MULTIPROCESS else None

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUEST_LATENCY = Histogram(
    "recsys_request_seconds",
    "HTTP request latency",
    ["service", "route", "method", "status", "model", "version"],
    buckets=_BUCKETS,
)
FEATURE_READ_LATENCY = Histogram(
    "recsys_feature_read_seconds", "Online feature read latency", ["service", "view", "store"], buckets=_BUCKETS
)
INFERENCE_LATENCY = Histogram(
    "recsys_inference_seconds",
    "Model inference latency, one observation per inference call (a whole micro-batch when batching)",
    ["service", "model", "version"],
    buckets=_BUCKETS,
)
ERRORS = Counter("recsys_errors_total", "Responses with status >= 400", ["service", "route", "status"])
MISSING_ENTITIES = Counter("recsys_missing_entities_total", "Entities read that the online store lacks", ["view"])


class MetricsMiddleware:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs ~0.3 ms CPU per request).

    Labels: the matched route's path template (not the raw URL, so ids don't explode the series),
    and the model/version a handler put on ``request.state``.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            observe_request(
                self.service, getattr(scope.get("route"), "path", "unmatched"), scope["method"], status, scope, start
            )


def observe_request(service: str, route: str, method: str, status: int, scope: Scope, start: float) -> None:
    """One request's latency and error count (the middleware's, and the kit's direct hot path's)."""
    st = scope.get("state") or {}
    REQUEST_LATENCY.labels(
        service, route, method, str(status), st.get("model", ""), st.get("model_version", "")
    ).observe(time.perf_counter() - start)
    if status >= 400:
        ERRORS.labels(service, route, str(status)).inc()


def install_metrics(app: FastAPI, service: str) -> None:
    app.add_middleware(MetricsMiddleware, service=service)

    @app.get("/metrics", include_in_schema=False)
    def _metrics() -> Response:
        return metrics_response()


def metrics_response() -> Response:
    if MULTIPROC_DIR is not None:
        reap_dead_workers(MULTIPROC_DIR)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(MULTIPROC_DIR))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def worker_exiting() -> None:
    """This process stops serving: drop its live gauges, as ``mark_process_dead`` in a master would."""
    if MULTIPROC_DIR is not None:
        multiprocess.mark_process_dead(os.getpid(), str(MULTIPROC_DIR))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def reap_dead_workers(path: Path) -> list[int]:
    """``mark_process_dead`` for live-gauge files of pids that no longer run (killed workers)."""
    dead = set()
    for f in path.glob("gauge_live*_*.db"):
        pid = f.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            dead.add(int(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))
    return sorted(dead)
