"""Token auth for admin endpoints: ``Authorization: Bearer <token>``.

401 when no token is sent, 403 when it is wrong (or when the service has no admin token set,
so an unconfigured deployment is closed, not open).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Header

from services.kit.errors import ApiError
from services.kit.settings import ServiceSettings


def admin_token_dependency(settings: ServiceSettings) -> Callable[..., None]:
    def require_admin(authorization: str | None = Header(default=None)) -> None:
        if not authorization:
            raise ApiError(401, "unauthorized", "admin token required: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        expected = settings.admin_token.get_secret_value() if settings.admin_token else None
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "malformed Authorization header; expected 'Bearer <token>'")
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError(403, "forbidden", "admin token rejected")

    return require_admin
