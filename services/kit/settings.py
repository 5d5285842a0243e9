"""Service settings from the environment (pydantic-settings), one class all services extend."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common settings; a service subclasses this and adds its own fields.

    Environment variables use the ``RECSYS_`` prefix: ``RECSYS_ADMIN_TOKEN``, ``RECSYS_PORT`` ...
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    service_name: str = "recsys"
    host: str = "127.0.0.1"
    port: int = 8000
    # Admin endpoints (experiments, deploy, rollback) refuse every call while this is unset.
    admin_token: SecretStr | None = None
    log_level: str = "info"
    # Largest batch of entities one request may read.
    max_entities_per_request: int = 1000
