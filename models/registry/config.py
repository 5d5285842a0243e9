"""Registry settings from the environment: only the database URL; paths come from FeatureStoreSettings."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """``RECSYS_REGISTRY_URL`` selects the database (``postgresql+psycopg://postgres@127.0.0.1:5432/recsys``).

    Unset, the registry is a SQLite file in the data dir: nothing to run for a laptop or the demo,
    and the same code path as production apart from the URL.
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_REGISTRY_", extra="ignore")

    url: str | None = None
