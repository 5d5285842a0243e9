"""The model registry: immutable model versions, aliases with an append-only history, feature pins.

A model version is registered once and never changes: its files are copied under
``<data_dir>/models/<name>/v<N>/``, hashed, made read-only, and described by a manifest that
pins the exact feature versions it was trained on. Deploys move *aliases* (``champion``,
``challenger``) between versions; every move is recorded, so "what was serving at 14:02" has
an answer and a rollback is just another alias move.

The registry is also the feature store's ``PinSource``: a feature version that any registered
model version pins cannot be retired.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feature_store.config import REPO_ROOT, FeatureStoreSettings
from feature_store.versions import FeatureStoreError, VersionCatalog, parse_ref
from models.contracts import CONTRACTS
from models.registry import artifacts
from models.registry.config import RegistrySettings
from models.registry.errors import AliasError, ModelNotFound, RegistrationError
from models.registry.manifest import (
    MANIFEST_FILE,
    AliasEvent,
    FeaturePin,
    ModelManifest,
    ModelVersion,
    TrainingInfo,
)
from models.registry.store import (
    WRITE_OPTION,
    AliasEventRow,
    AliasRow,
    FeaturePinRow,
    ModelVersionRow,
    as_utc,
    default_url,
    make_engine,
)

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_VERSION_REF = re.compile(r"^v?(\d+)$")
# Registration retries when another registrant took the same number; each retry sees the new max.
MAX_VERSION_ATTEMPTS = 64
# Version numbers live in a 32-bit INTEGER column (PostgreSQL): larger numbers cannot exist.
MAX_VERSION_NUMBER = 2**31 - 1


@functools.lru_cache(maxsize=1)
def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else "unknown"


def code_git_sha() -> str:
    """The code's commit: ``RECSYS_GIT_SHA`` (images built without .git) or ``git rev-parse HEAD``, else unknown."""
    return os.environ.get("RECSYS_GIT_SHA", "").strip() or _git_head()


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise RegistrationError(
            f"model name {name!r} must match {NAME_RE.pattern} (lower-case letters, digits, '-', '_'); "
            "it becomes a directory name"
        )


def check_alias_name(alias: str) -> None:
    """Alias names are identifiers that can never be mistaken for a version ref."""
    if not ALIAS_RE.match(alias) or alias == "latest" or _VERSION_REF.match(alias):
        raise AliasError(
            f"alias {alias!r} must match [a-z][a-z0-9_-]* and must not be 'latest' or look like a version (v3)"
        )


class ModelRegistry:
    """Registered model versions, their aliases and alias history, in a SQL database plus an artifact tree.

    ``url`` selects the database (default: ``RECSYS_REGISTRY_URL``, else ``sqlite:///<data_dir>/registry.db``);
    ``data_dir`` holds the artifacts (default: the feature store's data dir); ``catalog`` resolves
    pinned feature versions (default: ``<data_dir>/catalog``).
    """

    def __init__(self, url: str | None = None, data_dir: Path | None = None, catalog: VersionCatalog | None = None):
        if data_dir is None:
            data_dir = FeatureStoreSettings().data_dir
        self.data_dir = Path(data_dir)
        self.url = url or RegistrySettings().url or default_url(self.data_dir)
        self.catalog = catalog if catalog is not None else VersionCatalog(self.data_dir / "catalog")
        self.engine: Engine = make_engine(self.url)
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})

    @classmethod
    def from_settings(cls, settings: FeatureStoreSettings | None = None) -> ModelRegistry:
        """The registry for a deployment: the feature store's data dir and catalog, ``RECSYS_REGISTRY_URL``."""
        settings = settings or FeatureStoreSettings()
        return cls(url=RegistrySettings().url, data_dir=settings.data_dir, catalog=VersionCatalog(settings.catalog_dir))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelRegistry({self.engine.url.render_as_string(hide_password=True)!r}, data_dir={self.data_dir})"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine) as session, session.begin():
            yield session

    # --- registration -------------------------------------------------------------------------

    def register(
        self,
        *,
        family: str,
        name: str,
        artifact_dir: Path,
        feature_refs: list[str],
        training: TrainingInfo | dict[str, Any],
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        description: str = "",
    ) -> ModelManifest:
        """Validate, copy and record a new version of ``name``; returns its manifest (with the assigned version).

        Refuses (RegistrationError, nothing stored) an unknown family, a bad name, a missing file, a
        graph ONNX Runtime cannot load, a signature that breaks the family contract, or a pinned
        feature version the catalog does not have.
        """
        contract = CONTRACTS.get(family)
        if contract is None:
            raise RegistrationError(f"unknown model family {family!r}; known families: {', '.join(sorted(CONTRACTS))}")
        _check_name(name)
        source = Path(artifact_dir)
        if not source.is_dir():
            raise RegistrationError(f"artifact directory {source} does not exist")
        try:
            training_info = training if isinstance(training, TrainingInfo) else TrainingInfo.model_validate(training)
        except ValidationError as exc:
            raise RegistrationError(f"bad training info: {exc}") from None
        metrics = dict(metrics or {})
        bad = [k for k, v in metrics.items() if not isinstance(v, int | float) or not math.isfinite(v)]
        if bad:
            raise RegistrationError(f"metrics must be finite numbers; bad: {', '.join(sorted(bad))}")
        pins = self._resolve_pins(feature_refs)

        # Everything else is checked on the staged copy: exactly the bytes that will be stored.
        parent = self.models_dir / name
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            files = artifacts.copy_and_hash(source, staging)
            onnx_file = artifacts.find_onnx(files, source)
            missing = [f for f in contract.required_files if f not in files]
            if missing:
                raise RegistrationError(
                    f"required file missing: {', '.join(missing)} not in {source} (the {family!r} family needs "
                    f"{', '.join(contract.required_files)}); it has {', '.join(sorted(files))}"
                )
            locations = artifacts.external_data_locations(staging / onnx_file)
            data_files = artifacts.check_external_data(onnx_file, locations or [], files, source)
            inputs, outputs = artifacts.load_signature(staging / onnx_file)
            artifacts.check_contract(contract, inputs, outputs)
            draft: dict[str, Any] = dict(
                family=family,
                name=name,
                onnx_file=onnx_file,
                onnx_sha256=files[onnx_file].sha256,
                onnx_data_files=tuple(data_files),
                files=files,
                inputs=tuple(inputs),
                outputs=tuple(outputs),
                feature_refs=tuple(pins),
                training=training_info,
                metrics=metrics,
                params=params or {},
                git_sha=code_git_sha(),
                description=description,
            )
            try:  # validate params (JSON values only) before taking a version number
                ModelManifest(version=0, created_at=datetime.now(UTC), **draft)
            except ValidationError as exc:
                raise RegistrationError(f"bad manifest field: {exc}") from None
            manifest = self._commit_version(name, staging, draft)
        finally:
            artifacts.remove_tree(staging)  # gone already when committed (renamed)
        log.info("registered %s (%s) with features %s", manifest.ref, family, manifest.pinned_refs or "none")
        return manifest

    def _resolve_pins(self, feature_refs: list[str]) -> list[FeaturePin]:
        pins: list[FeaturePin] = []
        for raw in feature_refs:
            try:
                view, num, _feature = parse_ref(raw)
                spec = self.catalog.get(view, num)
                state = self.catalog.status(view, num).state
            except FeatureStoreError as exc:  # UnknownFeatureVersion lists the versions that exist
                raise RegistrationError(f"cannot pin feature {raw!r}: {exc}") from None
            if state == "retired":
                raise RegistrationError(f"cannot pin feature {spec.ref}: it is retired (its data was deleted)")
            if all(p.ref != spec.ref for p in pins):  # "lte@v1:lte" and "lte@v1" pin the same version
                pins.append(
                    FeaturePin(ref=spec.ref, schema_hash=spec.schema_hash, basis_fingerprint=spec.basis_fingerprint)
                )
        return pins

    def _commit_version(self, name: str, staging: Path, draft: dict[str, Any]) -> ModelManifest:
        """Take the next version number and move the staged files into place, atomically with the row.

        The row is inserted (flushed) first: from then on this transaction owns ``(name, N)`` (the
        unique index makes any other inserter of N wait, then fail and retry with N+1), so it is safe
        to rename the staging dir to ``v<N>`` before committing. If the commit fails the rename is undone.
        """
        for _attempt in range(MAX_VERSION_ATTEMPTS):
            with Session(self._write_engine) as session:
                current = session.scalar(select(func.max(ModelVersionRow.version)).where(ModelVersionRow.name == name))
                version = (current or 0) + 1
                manifest = ModelManifest(version=version, created_at=datetime.now(UTC), **draft)
                final = self.models_dir / name / f"v{version}"
                row = ModelVersionRow(
                    name=name,
                    version=version,
                    family=manifest.family,
                    manifest=manifest.model_dump(mode="json"),
                    artifact_path=final.relative_to(self.data_dir).as_posix(),
                    created_at=manifest.created_at,
                    pins=[
                        FeaturePinRow(
                            name=name,
                            version=version,
                            ref=p.ref,
                            schema_hash=p.schema_hash,
                            basis_fingerprint=p.basis_fingerprint,
                        )
                        for p in manifest.feature_refs
                    ],
                )
                session.add(row)
                try:
                    session.flush()
                except IntegrityError:
                    session.rollback()
                    log.debug("%s@v%d taken concurrently; retrying", name, version)
                    continue
                manifest_file = staging / MANIFEST_FILE
                manifest_file.unlink(missing_ok=True)
                manifest_file.write_text(manifest.model_dump_json(indent=2))
                if final.exists():
                    # Left by a registration that crashed between rename and commit: no row owns it
                    # (we hold the row now), so it is garbage.
                    log.warning("removing orphaned artifact dir %s", final)
                    artifacts.remove_tree(final)
                os.rename(staging, final)
                try:
                    session.commit()
                except IntegrityError:
                    os.rename(final, staging)
                    continue
                except BaseException:
                    os.rename(final, staging)
                    raise
            try:
                artifacts.make_read_only(final)
            except OSError as exc:  # the version is committed; read-only is a guard rail, verify() is the check
                log.warning("could not make %s read-only: %s", final, exc)
            return manifest
        raise RegistrationError(f"could not allocate a version number for {name!r} after {MAX_VERSION_ATTEMPTS} tries")

    # --- reading --------------------------------------------------------------------------------

    def _to_version(self, row: ModelVersionRow) -> ModelVersion:
        path = Path(row.artifact_path)
        return ModelVersion(
            manifest=ModelManifest.model_validate(row.manifest),
            path=path if path.is_absolute() else self.data_dir / path,
        )

    def names(self) -> list[str]:
        with self._read() as s:
            return list(s.scalars(select(ModelVersionRow.name).distinct().order_by(ModelVersionRow.name)))

    def versions(self, name: str) -> list[ModelManifest]:
        """Every version of ``name``, oldest first (empty for an unknown name)."""
        with self._read() as s:
            rows = s.scalars(
                select(ModelVersionRow).where(ModelVersionRow.name == name).order_by(ModelVersionRow.version)
            )
            return [ModelManifest.model_validate(r.manifest) for r in rows]

    def _not_found(self, s: Session, name: str, what: str) -> ModelNotFound:
        nums = list(
            s.scalars(
                select(ModelVersionRow.version).where(ModelVersionRow.name == name).order_by(ModelVersionRow.version)
            )
        )
        if not nums:
            known = list(s.scalars(select(ModelVersionRow.name).distinct().order_by(ModelVersionRow.name)))
            return ModelNotFound(f"unknown model {name!r}; registered models: {', '.join(known) or 'none'}")
        aliases = s.execute(select(AliasRow.alias, AliasRow.version).where(AliasRow.name == name)).all()
        shown = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases)) or "none"
        return ModelNotFound(
            f"unknown {what} of model {name!r}; versions: {', '.join(f'v{n}' for n in nums)}; aliases: {shown}"
        )

    def get(self, name: str, version: int) -> ModelVersion:
        """One version by number. Cheap (no hashing): services call it per load; use ``verify`` to re-hash."""
        with self._read() as s:
            if not 1 <= int(version) <= MAX_VERSION_NUMBER:  # the database would refuse the comparison itself
                raise self._not_found(s, name, f"version v{version}")
            row = s.scalar(
                select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.version == int(version))
            )
            if row is None:
                raise self._not_found(s, name, f"version v{version}")
            return self._to_version(row)

    def resolve(self, name: str, ref: str | int) -> ModelVersion:
        """``ref`` is a version (3, "3", "v3"), "latest", or an alias name."""
        return self.get(name, self.resolve_version(name, ref))

    def resolve_version(self, name: str, ref: str | int) -> int:
        if isinstance(ref, int):
            return ref
        ref = str(ref).strip()
        m = _VERSION_REF.match(ref)
        if m:
            return int(m[1])
        with self._read() as s:
            if ref == "latest":
                latest = s.scalar(select(func.max(ModelVersionRow.version)).where(ModelVersionRow.name == name))
                if latest is None:
                    raise self._not_found(s, name, "latest version")
                return int(latest)
            version = s.scalar(select(AliasRow.version).where(AliasRow.name == name, AliasRow.alias == ref))
            if version is None:
                raise self._not_found(s, name, f"alias or version {ref!r}")
            return int(version)

    def verify(self, name: str, version: int) -> None:
        """Re-hash every file of the version against its manifest; raises ArtifactTampered."""
        self.get(name, version).verify()

    # --- aliases -------------------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        with self._read() as s:
            rows = s.execute(select(AliasRow.alias, AliasRow.version).where(AliasRow.name == name)).all()
            return {a: int(v) for a, v in sorted(rows)}

    def register_trained(
        self,
        out: dict[str, Any],
        *,
        family: str,
        name: str,
        description: str,
        alias: str | None = "champion",
        actor: str = "pipeline",
        reason: str = "",
    ) -> ModelManifest:
        """Register what a family's training pipeline returned (``artifact_dir``, ``feature_refs``,
        ``training``, ``metrics``, ``params``), then point ``alias`` at the new version."""
        manifest = self.register(
            family=family,
            name=name,
            artifact_dir=Path(out["artifact_dir"]),
            feature_refs=out["feature_refs"],
            training=out["training"],
            metrics=out["metrics"],
            params=json.loads(json.dumps(out["params"])),  # JSON-safe: tuples become lists, as stored
            description=description,
        )
        if alias:
            self.set_alias(name, alias, manifest.version, actor=actor, reason=reason)
        return manifest

    def set_alias(self, name: str, alias: str, version: int | str, actor: str = "cli", reason: str = "") -> AliasEvent:
        """Point ``alias`` at a version (a number, "v3", "latest" or another alias) and record the move."""
        check_alias_name(alias)
        target = self.resolve(name, version).version  # refuses unknown versions, listing the known ones
        return self._change_alias(name, alias, target, actor, reason)

    def delete_alias(self, name: str, alias: str, actor: str = "cli", reason: str = "") -> AliasEvent:
        """Remove an alias; the deletion is recorded like any other move (``to_version`` None)."""
        return self._change_alias(name, alias, None, actor, reason)

    def _change_alias(self, name: str, alias: str, target: int | None, actor: str, reason: str) -> AliasEvent:
        # The alias row is locked (PostgreSQL FOR UPDATE; SQLite: the IMMEDIATE write lock) so the
        # recorded from_version is the one actually replaced. Two first-time setters race on the
        # primary key; the loser retries and then sees the winner's row.
        for _attempt in range(MAX_VERSION_ATTEMPTS):
            with Session(self._write_engine) as s:
                row = s.get(AliasRow, (name, alias), with_for_update=True)
                if target is None and row is None:
                    names = s.scalars(select(AliasRow.alias).where(AliasRow.name == name).order_by(AliasRow.alias))
                    current = ", ".join(names) or "none"
                    raise AliasError(f"model {name!r} has no alias {alias!r}; its aliases: {current}")
                now = datetime.now(UTC)
                previous = row.version if row is not None else None
                if target is None:
                    s.delete(row)
                elif row is None:
                    s.add(AliasRow(name=name, alias=alias, version=target, updated_at=now))
                else:
                    row.version, row.updated_at = target, now
                ev = AliasEventRow(
                    name=name, alias=alias, from_version=previous, to_version=target, actor=actor, reason=reason, at=now
                )
                s.add(ev)
                try:
                    s.flush()
                    event = self._to_event(ev)
                    s.commit()
                except IntegrityError:
                    s.rollback()
                    continue
            log.info("alias %s/%s: %s -> %s by %s (%s)", name, alias, previous, target, actor, reason)
            return event
        raise AliasError(f"could not update alias {name}/{alias}: too many concurrent changes")

    @staticmethod
    def _to_event(r: AliasEventRow) -> AliasEvent:
        return AliasEvent(
            id=r.id,
            name=r.name,
            alias=r.alias,
            from_version=r.from_version,
            to_version=r.to_version,
            actor=r.actor,
            reason=r.reason or "",
            at=as_utc(r.at),
        )

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every alias change of ``name`` (or of one alias), newest first."""
        q = select(AliasEventRow).where(AliasEventRow.name == name)
        if alias is not None:
            q = q.where(AliasEventRow.alias == alias)
        with self._read() as s:
            return [self._to_event(r) for r in s.scalars(q.order_by(AliasEventRow.id.desc()))]

    # --- PinSource -------------------------------------------------------------------------------

    def pinned_by(self, feature_ref: str) -> list[str]:
        """``["seq-lte@v4", ...]``: every registered model version whose manifest pins ``feature_ref``."""
        try:
            view, num, _ = parse_ref(feature_ref)
            ref = f"{view}@v{num}"
        except FeatureStoreError:
            return []  # not a feature ref, so nothing can pin it
        with self._read() as s:
            rows = s.execute(
                select(FeaturePinRow.name, FeaturePinRow.version)
                .where(FeaturePinRow.ref == ref)
                .order_by(FeaturePinRow.name, FeaturePinRow.version)
            ).all()
        return [f"{n}@v{v}" for n, v in rows]
