"""Service settings from the environment (pydantic-settings), one class all services extend."""

from __future__ import annotations

from pydantic import Field, SecretStr
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
    # Micro-batching of model calls (services/kit/batching.py): concurrent requests for one model
    # version share one feature read per view and one inference call. RECSYS_BATCHING=false runs
    # every request alone (the pre-batching path).
    batching: bool = True
    batch_max_size: int = Field(default=64, ge=1, le=4096)
    # How long a queued request may wait for companions while another batch runs; an idle model
    # never waits (see the module doc), so this costs nothing at low load.
    batch_max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    # Batches of one model version running at once, each in its own thread: with 2, one batch's
    # graph call (which releases the GIL) overlaps the next one's feature reads. Capacity of the
    # embedded demo with wrk, medians of interleaved rounds, 2 vs 1: 904 vs 828, 818 vs 653, 888 vs
    # 829 req/s (2 loaded cores, so within noise one run in three).
    batch_max_concurrency: int = Field(default=2, ge=1, le=64)
