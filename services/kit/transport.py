"""How one service calls another: pooled HTTP between processes, or in-process ASGI calls.

Microservice mode and embedded mode run the same gateway code; only the transport differs.
Both speak the services' HTTP API (JSON in, JSON out), so a service behaves identically either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import orjson
from fastapi import FastAPI

from services.kit.app import ServiceApp
from services.kit.http1 import ConnectionFailed, HostPool


class ServiceUnavailable(Exception):
    """The service could not be reached or did not answer in time (safe to fall back)."""


class Transport(Protocol):
    async def post(
        self, service: str, path: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]: ...

    async def aclose(self) -> None: ...


def _decode_bytes(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"error": {"code": "bad_response", "message": raw[:200].decode(errors="replace")}}


class HttpTransport:
    """Pooled keep-alive HTTP/1.1 to each service (services/kit/http1.py).

    Retries: once, on another connection, when a kept-alive connection turned out closed by the
    server before any of the response arrived (the services' calls are reads, so a repeat is
    harmless). A connection that cannot be opened, a broken response and a timeout are
    ``ServiceUnavailable``: the gateway's breaker counts them and a fallback answers.
    """

    def __init__(self, base_urls: Mapping[str, str], max_connections: int = 200) -> None:
        self.base_urls = dict(base_urls)
        self.max_connections = max_connections
        self._pools: dict[str, HostPool] = {}

    def _pool(self, service: str) -> HostPool:
        # Created lazily: a pool's semaphore and connections belong to the server's event loop.
        pool = self._pools.get(service)
        if pool is None:
            base = self.base_urls.get(service)
            if base is None:
                raise ServiceUnavailable(f"no address configured for service {service!r}")
            pool = self._pools[service] = HostPool(base, self.max_connections)
        return pool

    async def post(
        self, service: str, path: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        pool = self._pool(service)
        try:
            status, raw = await pool.post_json(path, orjson.dumps(body), headers, timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable(f"{service}: timed out after {timeout:.3f}s") from exc
        except ConnectionFailed as exc:
            raise ServiceUnavailable(f"{service}: {exc}") from exc
        return status, _decode_bytes(raw)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


class InProcessTransport:
    """Calls service apps living in this process: no sockets, the same request path.

    A call to a service's hot route (a ``LeanJSONRoute``: the recommend/score endpoints) runs that
    route's own core, ``call_in_process``: the same body validation, endpoint, error handlers and
    request metrics as over HTTP, JSON in and JSON out, without an HTTP server or the framework's
    layers (services/kit/routes.py). Any other path goes through the service's whole ASGI app.
    httpx's ASGITransport did this job at ~0.4-0.7 ms CPU per call here, more than the sequential
    service's own work per request once it batches. A service's unhandled error comes back as its
    500 answer, as over HTTP (the gateway then falls back); ``timeout`` is not enforced in-process.
    """

    def __init__(self, apps: Mapping[str, FastAPI]) -> None:
        self.apps = dict(apps)

    async def post(
        self, service: str, path: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        app = self.apps.get(service)
        if app is None:
            raise ServiceUnavailable(f"service {service!r} is not embedded in this process")
        raw = orjson.dumps(body)
        path, _, query = path.partition("?")
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        route = app.hot_route("POST", path) if isinstance(app, ServiceApp) and not query else None
        if route is not None:
            status, content = await route.call_in_process(app, app.service_name, raw, head)
            return status, _decode_bytes(content)
        return await self._asgi_call(app, service, path, query, raw, head)

    async def _asgi_call(
        self, app: FastAPI, service: str, path: str, query: str, raw: bytes, head: list[tuple[bytes, bytes]]
    ) -> tuple[int, Any]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", service.encode()), *head],
            "client": ("127.0.0.1", 0),
            "server": (service, 80),
            "extensions": {},
        }
        request_sent = False
        done = asyncio.Event()
        status = 500
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await done.wait()  # later reads mean "is the client still there": it is, until the response ends
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await app(scope, receive, send)  # type: ignore[arg-type]
        finally:
            done.set()
        return status, _decode_bytes(b"".join(chunks))

    async def aclose(self) -> None:
        return None


@asynccontextmanager
async def embedded_lifespans(apps: Mapping[str, FastAPI]) -> AsyncIterator[None]:
    """Run each embedded app's lifespan (ASGITransport does not), so their state is set up."""
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield
