"""Immutable feature versions and the catalog that holds them.

A feature version is one computation of a logical view (``lte_avg``, ``recent_items`` ...):
its schema, the semantic basis it lives in, the window it was computed over and the offline
parquet it was written to. Once written, a version never changes; a new computation is a new
version number. Each version is served by its own Feast feature view, ``<view>__v<N>``, so
several versions are online side by side and materializing one never touches another
(docs/feast-versioning.md says why this beats Feast's experimental ``view@vN``).

The catalog is a directory of JSON files, one immutable spec per version plus a small mutable
status file (offline / materializing / online / retired). It is readable without Feast, so
the serving path can resolve ``lte_avg@v3`` without importing it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The value types a feature can have, named after Feast's ValueProto list/scalar kinds.
FeatureDType = Literal["float_list", "string_list", "int64_list", "int64", "double", "string"]
VersionState = Literal["offline", "materializing", "online", "retired"]

ENTITY_JOIN_KEYS: dict[str, str] = {"user": "user_id", "item": "item_id", "creator": "creator_id"}

_REF_RE = re.compile(r"^(?P<view>[a-z][a-z0-9_]*?)@v(?P<version>\d+)(?::(?P<feature>[a-z][a-z0-9_]*))?$")
_VIEW_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class FeatureStoreError(Exception):
    """Base class for feature store errors a user can act on."""


class UnknownFeatureVersion(FeatureStoreError, LookupError):
    def __init__(self, view: str, version: int | None, available: list[int]) -> None:
        self.view, self.version, self.available = view, version, available
        shown = ", ".join(f"{view}@v{v}" for v in available) or "none"
        what = f"{view}@v{version}" if version is not None else f"view {view!r}"
        super().__init__(f"unknown feature version {what}; available: {shown}")


class VersionConflict(FeatureStoreError):
    """A write would change an immutable version."""


class FeatureField(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    dtype: FeatureDType
    # Fixed length of a float_list (the basis dimension for LTE vectors); None when variable.
    length: int | None = None


class ComputationWindow(BaseModel):
    """What a version was computed from: data as of ``as_of``, LTE lag and window."""

    model_config = ConfigDict(frozen=True)
    as_of: datetime
    lag_seconds: float = 0.0
    window_seconds: float | None = None
    snapshot_every_seconds: float | None = None
    first_snapshot: datetime | None = None


class FeatureVersion(BaseModel):
    """One immutable version of a logical feature view."""

    model_config = ConfigDict(frozen=True)
    view: str
    version: int
    entity: Literal["user", "item", "creator"]
    fields: tuple[FeatureField, ...]
    schema_hash: str
    basis_fingerprint: str | None = None
    window: ComputationWindow
    dataset: str
    # Offline parquet with one row per (entity, event_timestamp); relative to the data dir.
    source_path: str
    rows: int
    created_at: datetime
    description: str = ""
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @functools.cached_property
    def ref(self) -> str:
        return f"{self.view}@v{self.version}"

    @functools.cached_property
    def feast_name(self) -> str:
        """The Feast feature view that serves this version."""
        return feast_view_name(self.view, self.version)

    @property
    def join_key(self) -> str:
        return ENTITY_JOIN_KEYS[self.entity]

    def field(self, name: str) -> FeatureField:
        for f in self.fields:
            if f.name == name:
                return f
        raise FeatureStoreError(f"{self.ref} has no feature {name!r}; it has {[f.name for f in self.fields]}")


class VersionStatus(BaseModel):
    """The mutable part: where a version is online and since when."""

    state: VersionState = "offline"
    online_store: str | None = None
    materialized_at: datetime | None = None
    online_rows: int | None = None
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    note: str = ""


def feast_view_name(view: str, version: int) -> str:
    return f"{view}__v{version}"


@functools.lru_cache(maxsize=4096)
def parse_ref(ref: str) -> tuple[str, int, str | None]:
    """``"lte_avg@v3"`` or ``"lte_avg@v3:lte"`` into (view, version, feature)."""
    m = _REF_RE.match(ref.strip())
    if not m:
        raise FeatureStoreError(f"bad feature ref {ref!r}; expected '<view>@v<N>' or '<view>@v<N>:<feature>'")
    return m["view"], int(m["version"]), m["feature"]


def schema_hash(entity: str, fields: tuple[FeatureField, ...] | list[FeatureField]) -> str:
    """Hash of what a model depends on structurally: entity and (name, dtype, length) of each field."""
    payload = json.dumps(
        {"entity": entity, "fields": [[f.name, f.dtype, f.length] for f in fields]}, sort_keys=True
    ).encode()
    return "sha256:" + hashlib.sha256(payload).hexdigest()[:16]


class VersionCatalog:
    """The directory of version specs: ``<root>/<view>/v<N>.json`` (immutable) + ``v<N>.status.json``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _spec_path(self, view: str, version: int) -> Path:
        return self.root / view / f"v{version}.json"

    def _status_path(self, view: str, version: int) -> Path:
        return self.root / view / f"v{version}.status.json"

    def views(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _VIEW_RE.match(p.name))

    def version_numbers(self, view: str) -> list[int]:
        d = self.root / view
        if not d.exists():
            return []
        nums = []
        for p in d.glob("v*.json"):
            stem = p.name[1:-5]
            if stem.isdigit():
                nums.append(int(stem))
        return sorted(nums)

    def next_version(self, view: str) -> int:
        nums = self.version_numbers(view)
        return (nums[-1] + 1) if nums else 1

    def get(self, view: str, version: int) -> FeatureVersion:
        path = self._spec_path(view, version)
        if not path.exists():
            raise UnknownFeatureVersion(view, version, self.version_numbers(view))
        return FeatureVersion.model_validate_json(path.read_text())

    def resolve(self, ref: str) -> FeatureVersion:
        view, version, _ = parse_ref(ref)
        return self.get(view, version)

    def all_versions(self) -> list[FeatureVersion]:
        return [self.get(v, n) for v in self.views() for n in self.version_numbers(v)]

    def register(self, spec: FeatureVersion) -> FeatureVersion:
        """Write a new version. Writing the identical spec again is a no-op; a different one is refused."""
        if not _VIEW_RE.match(spec.view):
            raise FeatureStoreError(f"view name {spec.view!r} must be lower-case letters, digits and underscores")
        path = self._spec_path(spec.view, spec.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = spec.model_dump_json(indent=2)
        try:
            # O_EXCL makes the first writer win even when two builds race for the same number.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            existing = self.get(spec.view, spec.version)
            if existing.model_dump(exclude={"created_at"}) == spec.model_dump(exclude={"created_at"}):
                return existing
            raise VersionConflict(
                f"{spec.ref} already exists with different content; versions are immutable, "
                f"register as {spec.view}@v{self.next_version(spec.view)} instead"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        self.set_status(spec.view, spec.version, VersionStatus(state="offline"))
        return spec

    def status(self, view: str, version: int) -> VersionStatus:
        path = self._status_path(view, version)
        if not path.exists():
            if not self._spec_path(view, version).exists():
                raise UnknownFeatureVersion(view, version, self.version_numbers(view))
            return VersionStatus()
        return VersionStatus.model_validate_json(path.read_text())

    def set_status(self, view: str, version: int, status: VersionStatus) -> None:
        path = self._status_path(view, version)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(status.model_dump_json(indent=2))
        os.replace(tmp, path)  # atomic: a reader never sees half a status file

    def active_versions(self) -> list[FeatureVersion]:
        """Versions that are not retired: the ones Feast should define."""
        return [v for v in self.all_versions() if self.status(v.view, v.version).state != "retired"]

    def online_versions(self, view: str) -> list[int]:
        return [n for n in self.version_numbers(view) if self.status(view, n).state == "online"]
