"""How each service process starts: one definition for docker-compose.yml and the e2e tests.

tests/integration/test_compose.py checks that every service in docker-compose.yml runs exactly
``service_command(name, "0.0.0.0", port)``, and the e2e tests start real processes with
``service_command(name, "127.0.0.1", free_port)``, so the topology the tests prove is the one
compose describes.
"""

from __future__ import annotations

APPS: dict[str, str] = {
    "gateway": "services.gateway.app:app_factory",
    "sequential": "services.sequential.app:app_factory",
    "features": "services.features.app:app_factory",
    # Embedded mode (the demo): gateway and services in one process, called in-process.
    "embedded": "services.gateway.app:embedded_app_factory",
}

PORTS: dict[str, int] = {"gateway": 8000, "sequential": 8001, "features": 8002, "embedded": 8000}


def service_command(name: str, host: str, port: int) -> list[str]:
    return ["uvicorn", "--factory", APPS[name], "--host", host, "--port", str(port), "--log-level", "warning"]
