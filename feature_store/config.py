"""Paths and store selection for the feature store, from the environment (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class FeatureStoreSettings(BaseSettings):
    """Where data lives and which online store is used.

    Every field can be set from the environment with the ``RECSYS_`` prefix
    (``RECSYS_DATA_DIR=/srv/recsys``), except ``redis_url`` which also honours the
    conventional ``REDIS_URL``.
    """

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    # Generated artifacts: offline parquet, bases, version catalog, Feast registry, SQLite online store.
    data_dir: Path = REPO_ROOT / "var"
    # The shared, licence-restricted public datasets; never copied into the project.
    datasets_root: Path = REPO_ROOT.parent / "shared" / "datasets"
    # Feast project name; it is part of every online key, so two projects never collide.
    project: str = "recsys"
    # "sqlite" (embedded default) or "redis".
    online_store: str = "sqlite"
    redis_url: str | None = None

    def model_post_init(self, __context: object) -> None:
        import os

        # REDIS_URL alone selects Redis, unless a store was chosen explicitly.
        if "redis_url" not in self.model_fields_set and os.environ.get("REDIS_URL"):
            self.redis_url = os.environ["REDIS_URL"]
            if "online_store" not in self.model_fields_set:
                self.online_store = "redis"

    @property
    def offline_dir(self) -> Path:
        return self.data_dir / "offline"

    @property
    def basis_dir(self) -> Path:
        return self.data_dir / "bases"

    @property
    def catalog_dir(self) -> Path:
        return self.data_dir / "catalog"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "online_store.db"

    @property
    def feast_registry_path(self) -> Path:
        return self.data_dir / "feast_registry.db"
