"""How each service process starts: one definition for docker-compose.yml and the e2e tests.

``service_command`` gives the arguments of ``python -m``: the kit's launcher
(``services/kit/serve.py``: uvicorn's command line, after emptying the Prometheus multiprocess
directory once in the master) with the service's app factory. tests/integration/test_compose.py
checks that every service in docker-compose.yml runs exactly
``["python", "-m", *service_command(name, "0.0.0.0", port)]``, and the e2e tests start real
processes with ``[sys.executable, "-m", *service_command(name, "127.0.0.1", free_port)]``, so the
topology the tests prove is the one compose describes.
"""

from __future__ import annotations

APPS: dict[str, str] = {
    "gateway": "services.gateway.app:app_factory",
    "sequential": "services.sequential.app:app_factory",
    "features": "services.features.app:app_factory",
    "ctr": "services.ctr.app:app_factory",
    "basket": "services.basket.app:app_factory",
    # Embedded mode (the demo): gateway and services in one process, called in-process.
    "embedded": "services.gateway.app:embedded_app_factory",
}

PORTS: dict[str, int] = {
    "gateway": 8000,
    "sequential": 8001,
    "features": 8002,
    "ctr": 8003,
    "basket": 8004,
    "embedded": 8000,
}

LAUNCHER = "services.kit.serve"


def service_command(name: str, host: str, port: int, workers: int = 1) -> list[str]:
    """``workers > 1``: uvicorn worker processes sharing the port; set PROMETHEUS_MULTIPROC_DIR so
    /metrics sums all of them (services/kit/metrics.py)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cmd = [LAUNCHER, "--factory", APPS[name], "--host", host, "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd
