"""How one service calls another: pooled HTTP between processes, or in-process ASGI calls.

Microservice mode and embedded mode run the same gateway code; only the transport differs.
Both speak the services' HTTP API (JSON in, JSON out), so a service behaves identically either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import httpx
from fastapi import FastAPI


class ServiceUnavailable(Exception):
    """The service could not be reached or did not answer in time (safe to fall back)."""


class Transport(Protocol):
    async def post(
        self, service: str, path: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]: ...

    async def aclose(self) -> None: ...


def _decode(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return {"error": {"code": "bad_response", "message": resp.text[:200]}}


class HttpTransport:
    """One pooled keep-alive client for all services; retries only when the request never left."""

    def __init__(self, base_urls: Mapping[str, str], max_connections: int = 200) -> None:
        self.base_urls = dict(base_urls)
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=httpx.Timeout(1.0),
        )

    async def post(
        self, service: str, path: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        base = self.base_urls.get(service)
        if base is None:
            raise ServiceUnavailable(f"no address configured for service {service!r}")
        for attempt in (0, 1):
            try:
                resp = await self.client.post(base + path, json=body, timeout=timeout, headers=headers)
                return resp.status_code, _decode(resp)
            except httpx.ConnectError as exc:
                # Connection refused/reset before sending: the request did not reach the service,
                # so one retry cannot duplicate work.
                if attempt == 1:
                    raise ServiceUnavailable(f"{service}: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise ServiceUnavailable(f"{service}: timed out after {timeout:.3f}s") from exc
            except httpx.TransportError as exc:
                raise ServiceUnavailable(f"{service}: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.client.aclose()


class InProcessTransport:
    """Calls service apps living in this process through ASGI: no sockets, same request path."""

    def __init__(self, apps: Mapping[str, FastAPI]) -> None:
        self.apps = dict(apps)
        self.clients = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
            for name, app in self.apps.items()
        }

    async def post(
        self, service: str, path: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        client = self.clients.get(service)
        if client is None:
            raise ServiceUnavailable(f"service {service!r} is not embedded in this process")
        try:
            resp = await client.post(path, json=body, timeout=timeout, headers=headers)
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable(f"{service}: timed out after {timeout:.3f}s") from exc
        return resp.status_code, _decode(resp)

    async def aclose(self) -> None:
        for c in self.clients.values():
            await c.aclose()


@asynccontextmanager
async def embedded_lifespans(apps: Mapping[str, FastAPI]) -> AsyncIterator[None]:
    """Run each embedded app's lifespan (ASGITransport does not), so their state is set up."""
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield
