"""A lean request path for the hot JSON endpoints, documented exactly like any FastAPI route.

Why: a recommendation request does little Python work of its own (a feature read, a share of a
batched ONNX call), so the web framework's per-request cost decides the gateway's CPU and the
embedded mode's throughput. Under wrk (py-spy, --gil), FastAPI's and Starlette's layers around a
handler (the middleware chain, route matching, the request/response wrappers, FastAPI's per-request
OpenTelemetry lookup) were ~30% of the gateway's CPU, and an in-process call to a service went
through all of them a second time.

``LeanJSONRoute`` is FastAPI's own extension point (a custom ``route_class``) for endpoints shaped
``(body: Model, request: Request, <headers>) -> Model``. It gives the route one core, ``respond``:

* the body is validated from the raw bytes in one pydantic call (``model_validate_json``);
* header parameters are read straight from the request (declared in the signature, so OpenAPI
  documents them, and schemathesis tests them);
* the returned model is encoded with ``model_dump_json`` (a dict with orjson) and sent as is.

Three ways in, one core: FastAPI's routing (``get_route_handler``), the kit app's direct dispatch
of an exact ``(method, path)`` match (``serve``, services/kit/app.py), and an in-process call from
another app in the same process (``call_in_process``, the embedded transport). The last two skip
the framework's layers, so they do here what those layers did: the 413 body limit, the kit's
exception handlers (the same error bodies), and the request metrics.

Errors keep their usual shapes: a body that fails validation raises the same
``RequestValidationError`` FastAPI raises (locations under ``body``), handled by the kit's 422
handler; ``ApiError`` and friends go through the app's exception handlers. The route refuses, at
startup, endpoints that need more (query/path parameters, dependencies), so it cannot silently
skip something FastAPI would have done.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from services.kit.errors import ApiError
from services.kit.metrics import observe_request

JSON = "application/json"
# A recommendation or scoring request is a few KiB (CTR: 1,000 candidates is ~30 KiB); anything near
# this is a client bug or abuse, refused before it is buffered whole.
MAX_BODY_BYTES = 1 << 20

Respond = Callable[[bytes, Request], Awaitable[Response]]


def _too_large(size: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body of {size} bytes; at most {MAX_BODY_BYTES} bytes")


async def _receive_body(scope: Scope, receive: Receive) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            raise _too_large(int(value))
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks, size = [body], len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client_disconnected", "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


async def error_response(app: FastAPI, request: Request, exc: Exception) -> Response:
    """The response the app's exception handlers give for ``exc`` (most specific class first)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            result = handler(request, exc)
            return await result if inspect.isawaitable(result) else result  # type: ignore[no-any-return]
    raise exc  # no handler, not even for Exception: as in Starlette, the server answers 500


class LeanJSONRoute(APIRoute):
    respond: Respond

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        dep = self.dependant
        extra = {
            "query parameters": dep.query_params,
            "path parameters": dep.path_params,
            "cookie parameters": dep.cookie_params,
            "dependencies": dep.dependencies,
        }
        unsupported = [what for what, found in extra.items() if found]
        if unsupported or len(dep.body_params) != 1:
            raise TypeError(
                f"LeanJSONRoute {self.path}: the endpoint must take exactly one JSON body model, optionally the "
                f"Request and headers; it also has {unsupported or 'no single body'}"
            )
        body_param = dep.body_params[0]
        model = body_param.field_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"LeanJSONRoute {self.path}: the body must be a pydantic model, got {model!r}")
        body_name = body_param.name
        request_name = dep.request_param_name
        if any(p.field_info.is_required() or p.field_info.default is not None for p in dep.header_params):
            raise TypeError(f"LeanJSONRoute {self.path}: header parameters must default to None")
        headers = [(p.name, p.alias.replace("_", "-").lower()) for p in dep.header_params]
        endpoint = self.endpoint
        status_code = self.status_code or 200

        async def respond(raw: bytes, request: Request) -> Response:
            try:
                body = model.model_validate_json(raw)
            except ValidationError as exc:
                errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
                raise RequestValidationError(errors, body=raw) from None
            kwargs: dict[str, Any] = {body_name: body}
            if request_name:
                kwargs[request_name] = request
            for name, header in headers:
                kwargs[name] = request.headers.get(header)
            result = await endpoint(**kwargs)
            if isinstance(result, Response):
                return result
            if isinstance(result, BaseModel):
                content = result.__pydantic_serializer__.to_json(result)
            else:
                content = orjson.dumps(result)
            return Response(content, status_code=status_code, media_type=JSON)

        self.respond = respond

        async def handler(request: Request) -> Response:
            raw = await request.body()
            if len(raw) > MAX_BODY_BYTES:
                raise _too_large(len(raw))
            return await respond(raw, request)

        return handler

    async def serve(self, app: FastAPI, service: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request for this route directly (the kit app matched method and path)."""
        start = time.perf_counter()
        scope["app"] = app
        scope["route"] = self
        request = Request(scope, receive)
        try:
            response = await self.respond(await _receive_body(scope, receive), request)
        except Exception as exc:
            response = await error_response(app, request, exc)
        await response(scope, receive, send)
        observe_request(service, self.path, scope["method"], response.status_code, scope, start)

    async def call_in_process(
        self, app: FastAPI, service: str, raw: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes]:
        """A call from another app in this process: the same validation, endpoint, errors and metrics
        as over HTTP, without an HTTP server, framework layers or a second event-loop task."""
        start = time.perf_counter()
        scope: Scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": (service, 80),
            "app": app,
            "route": self,
        }
        request = Request(scope)
        try:
            if len(raw) > MAX_BODY_BYTES:
                raise _too_large(len(raw))
            response = await self.respond(raw, request)
        except Exception as exc:
            response = await error_response(app, request, exc)
        observe_request(service, self.path, "POST", response.status_code, scope, start)
        return response.status_code, bytes(response.body)
