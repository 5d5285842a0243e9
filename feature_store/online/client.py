"""The feature client services use: resolve ``view@vN`` refs against the catalog, read online.

Specs are immutable, so once resolved they are cached for the life of the process.
"""

from __future__ import annotations

from collections.abc import Sequence

from feature_store.config import FeatureStoreSettings
from feature_store.online.base import FeatureRows, MissingPolicy, OnlineReader
from feature_store.versions import FeatureVersion, VersionCatalog, parse_ref


class FeatureClient:
    def __init__(self, catalog: VersionCatalog, reader: OnlineReader) -> None:
        self.catalog = catalog
        self.reader = reader
        self._specs: dict[tuple[str, int], FeatureVersion] = {}

    def version(self, ref: str) -> FeatureVersion:
        view, num, _ = parse_ref(ref)
        spec = self._specs.get((view, num))
        if spec is None:
            spec = self._specs[(view, num)] = self.catalog.get(view, num)
        return spec

    def read(
        self,
        ref: str,
        entity_ids: Sequence[str],
        features: Sequence[str] | None = None,
        missing: MissingPolicy = "default",
    ) -> FeatureRows:
        """``read("lte_avg@v2", ["u1", "u2"])``; ``"lte_avg@v2:lte"`` reads one feature."""
        view, num, feature = parse_ref(ref)
        spec = self._specs.get((view, num)) or self.version(ref)
        if feature is not None:
            features = [feature]
        return self.reader.read(spec, entity_ids, features, missing)

    def close(self) -> None:
        self.reader.close()


def make_reader(settings: FeatureStoreSettings | None = None) -> OnlineReader:
    settings = settings or FeatureStoreSettings()
    if settings.online_store == "redis":
        from feature_store.online.redis import RedisOnlineReader

        if not settings.redis_url:
            raise ValueError("online_store=redis needs REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
        return RedisOnlineReader.from_url(settings.redis_url, settings.project)
    if settings.online_store == "sqlite":
        from feature_store.online.sqlite import SqliteOnlineReader

        return SqliteOnlineReader(settings.sqlite_path, settings.project)
    raise ValueError(f"unknown online store {settings.online_store!r}; use 'sqlite' or 'redis'")


def make_client(settings: FeatureStoreSettings | None = None) -> FeatureClient:
    settings = settings or FeatureStoreSettings()
    return FeatureClient(VersionCatalog(settings.catalog_dir), make_reader(settings))
