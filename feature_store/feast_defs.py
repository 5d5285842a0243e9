"""Feast objects (entities, one feature view per version, feature services) built from the catalog.

Imports Feast: used by apply / materialize / training-data retrieval, never by the serving path.
The Feast repo in feature_store/repo/ calls ``build_objects`` so ``feast apply`` there defines
exactly what ``recsys features apply`` does.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.types import Array, Float32, Float64, Int64, String

from feature_store.config import FeatureStoreSettings
from feature_store.versions import ENTITY_JOIN_KEYS, FeatureVersion, VersionCatalog

REPO_DIR = Path(__file__).resolve().parent / "repo"

_DTYPES = {
    "float_list": Array(Float32),
    "string_list": Array(String),
    "int64_list": Array(Int64),
    "int64": Int64,
    "double": Float64,
    "string": String,
}


def entities() -> dict[str, Entity]:
    return {
        name: Entity(name=name, join_keys=[key], value_type=ValueType.STRING, description=f"{name} ({key})")
        for name, key in ENTITY_JOIN_KEYS.items()
    }


def feature_view(spec: FeatureVersion, data_dir: Path, ents: dict[str, Entity]) -> FeatureView:
    source = FileSource(
        name=f"{spec.feast_name}_source",
        path=str((data_dir / spec.source_path).resolve()),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    )
    return FeatureView(
        name=spec.feast_name,
        entities=[ents[spec.entity]],
        # No TTL: a point-in-time join takes the latest snapshot at or before the example's time,
        # and the LTE's own lag/window (not a TTL) bounds what that snapshot may contain.
        ttl=timedelta(0),
        schema=[Field(name=f.name, dtype=_DTYPES[f.dtype]) for f in spec.fields],
        source=source,
        online=True,
        description=spec.description or spec.ref,
        tags={
            "view": spec.view,
            "version": str(spec.version),
            "schema_hash": spec.schema_hash,
            "basis_fingerprint": spec.basis_fingerprint or "",
            "dataset": spec.dataset,
        },
    )


def build_objects(catalog: VersionCatalog, data_dir: Path) -> list[object]:
    """Entities, a view per active version, and a ``<view>_latest`` service per logical view.

    Services are a convenience for exploring; models pin explicit ``view@vN`` refs instead.
    (Feast 0.67 can pin one native version per service, but not two versions of one view:
    see docs/feast-versioning.md.)
    """
    ents = entities()
    objects: list[object] = list(ents.values())
    latest: dict[str, FeatureView] = {}
    for spec in catalog.active_versions():
        fv = feature_view(spec, data_dir, ents)
        objects.append(fv)
        latest[spec.view] = fv  # active_versions is ordered by version number
    for view, fv in latest.items():
        objects.append(FeatureService(name=f"{view}_latest", features=[fv], description=f"newest version of {view}"))
    return objects


def redis_url_to_feast(url: str) -> str:
    """``redis://:pw@host:6380/3`` into Feast's connection string ``host:6380,db=3,password=pw``."""
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must start with redis:// or rediss://, got {url!r}")
    parts = [f"{u.hostname or 'localhost'}:{u.port or 6379}"]
    db = (u.path or "/0").lstrip("/") or "0"
    parts.append(f"db={int(db)}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: FeatureStoreSettings, offline_store: str = "duckdb") -> RepoConfig:
    """The Feast configuration for ``settings``.

    DuckDB is the offline store: Feast's default file store drops training rows timed before an
    entity's first feature row and loses input order (measured in loadtests/bench_features.py).
    """
    if settings.online_store == "redis":
        if not settings.redis_url:
            raise ValueError("online_store=redis needs REDIS_URL")
        online: dict[str, object] = {"type": "redis", "connection_string": redis_url_to_feast(settings.redis_url)}
    else:
        online = {"type": "sqlite", "path": str(settings.sqlite_path)}
    return RepoConfig(
        project=settings.project,
        provider="local",
        registry={"path": str(settings.feast_registry_path), "cache_ttl_seconds": 0},
        online_store=online,
        offline_store={"type": offline_store},
        entity_key_serialization_version=3,
        repo_path=REPO_DIR,
    )
