"""Experiments: the model, its validation, the SQL store, sticky buckets and the replicas' cache.

Tables (SQLAlchemy 2; SQLite file ``<data_dir>/gateway.db`` by default, PostgreSQL with
``RECSYS_GATEWAY_DB_URL``):

  experiments          the current definition of each experiment (JSON) and its ``version``
  experiment_events    append-only history: create/update/pause/resume/stop, actor, before, after
  sticky_assignments   (experiment, bucket_version, hash attribute, value) -> variant, first writer wins

Why a database and not files: every gateway replica must see the same experiments and the same
sticky assignments, and both must survive restarts. Writes are rare (admins); reads are served from
``ExperimentCache``, which polls the cheap ``change_token()`` and reloads within a second of a change.

Writes are serialized (PostgreSQL: a transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``)
so two admins cannot both claim the same namespace range, and event ids grow in commit order,
which is what makes ``max(event id)`` a safe change token.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import (
    DDL,
    JSON,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from services.gateway.assignment import Assignment, assign, check_condition

log = logging.getLogger(__name__)

WEIGHT_TOLERANCE = 1e-6
Status = Literal["draft", "running", "paused", "stopped"]
Action = Literal["create", "update", "pause", "resume", "stop"]
LIVE: frozenset[str] = frozenset({"running", "paused"})  # hold their surface and namespace range

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="lower-case slug")]
AttrName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")]


# --- model ---------------------------------------------------------------------------------------------


ModelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
ModelRef = Annotated[str, Field(min_length=1, max_length=64, description="alias (champion) or version (v3, 3)")]


# Families whose services score given candidates (POST /v1/score) rather than recommend.
RANKER_FAMILIES = frozenset({"ctr"})


class Rerank(BaseModel):
    """Second stage of a two-stage target: a ranker (``POST /v1/score``) re-orders the first stage's
    top ``candidates`` items. Pinned like any target: its own model and alias or version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Slug
    model: ModelName
    ref: ModelRef
    candidates: Annotated[int, Field(ge=1, le=1000, description="first-stage items handed to the ranker")] = 100


class Target(BaseModel):
    """Where a variant's requests go: a model service, a registered model, an alias or a pinned version;
    optionally followed by a re-ranking stage (candidates from this model, order from the ranker)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Slug
    model: ModelName
    ref: ModelRef
    rerank: Rerank | None = None


class Variant(BaseModel):
    """One arm. A shadow variant receives a copy of its experiment's traffic (responses discarded),
    so it takes no share of users: its weight must be 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Slug
    weight: Annotated[float, Field(ge=0, le=1)] = 0.0
    target: Target
    shadow: bool = False


class Namespace(BaseModel):
    """A slice ``[start, end)`` of a named hash space; experiments on disjoint slices never share a user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug
    start: Annotated[float, Field(ge=0, le=1)]
    end: Annotated[float, Field(ge=0, le=1)]

    @model_validator(mode="after")
    def _ordered(self) -> Namespace:
        if not self.start < self.end:
            raise PydanticCustomError(
                "namespace_range", "namespace start must be < end, got [{s}, {e})", {"s": self.start, "e": self.end}
            )
        return self

    def overlaps(self, other: Namespace) -> bool:
        return self.name == other.name and self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.name} [{self.start:g}, {self.end:g})"


class ExperimentSpec(BaseModel):
    """What an admin writes. Cross-field rules are checked here so every stored experiment satisfies them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Slug
    surface: Slug
    description: Annotated[str, Field(max_length=2000)] = ""
    seed: Annotated[str, Field(max_length=128)] = ""  # "" -> the key
    hash_attribute: AttrName = "user_id"
    fallback_attribute: AttrName | None = None
    variants: Annotated[tuple[Variant, ...], Field(min_length=2, max_length=20)]
    coverage: Annotated[float, Field(ge=0, le=1)] = 1.0
    namespace: Namespace | None = None
    condition: dict[str, Any] | None = None
    bucket_version: Annotated[int, Field(ge=0)] = 0
    sticky_bucketing: bool = True
    control: Slug | None = None  # None -> the first serving variant

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            if not data.get("seed") and isinstance(data.get("key"), str):
                data["seed"] = data["key"]  # explicit in storage: renaming can never reshuffle users
        return data

    @model_validator(mode="after")
    def _rules(self) -> ExperimentSpec:
        problems = experiment_problems(self)
        if problems:
            raise PydanticCustomError("invalid_experiment", "{problems}", {"problems": "; ".join(problems)})
        if self.control is None:
            object.__setattr__(self, "control", next(v.key for v in self.variants if not v.shadow))
        return self

    @property
    def serving(self) -> list[Variant]:
        return [v for v in self.variants if not v.shadow]

    @property
    def shadows(self) -> list[Variant]:
        return [v for v in self.variants if v.shadow]

    def variant(self, key: str) -> Variant | None:
        return next((v for v in self.variants if v.key == key), None)


def experiment_problems(spec: ExperimentSpec) -> list[str]:
    """Every cross-field problem at once, so an admin fixes a definition in one round trip."""
    problems: list[str] = []
    dupes = [k for k, n in Counter(v.key for v in spec.variants).items() if n > 1]
    if dupes:
        problems.append(f"duplicate variant keys: {', '.join(sorted(dupes))}")
    serving = [v for v in spec.variants if not v.shadow]
    weighted_shadows = [f"{v.key}={v.weight:g}" for v in spec.variants if v.shadow and v.weight]
    if weighted_shadows:
        problems.append(
            "shadow variants get a copy of the traffic, not a share of it: their weight must be 0 "
            f"({', '.join(weighted_shadows)})"
        )
    if not serving:
        problems.append("at least one variant must be a serving (non-shadow) variant")
    else:
        total = math.fsum(v.weight for v in serving)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            listed = ", ".join(f"{v.key}={v.weight:g}" for v in serving)
            problems.append(
                f"weights of serving variants must sum to 1 (±{WEIGHT_TOLERANCE:g}); got {total:.6g}: {listed}"
            )
    if spec.control is not None:
        control = spec.variant(spec.control)
        if control is None:
            problems.append(
                f"control {spec.control!r} is not a variant; variants: {', '.join(v.key for v in spec.variants)}"
            )
        elif control.shadow:
            problems.append(f"control {spec.control!r} is a shadow variant; the control must serve traffic")
    if spec.fallback_attribute is not None and spec.fallback_attribute == spec.hash_attribute:
        problems.append("fallback_attribute must differ from hash_attribute")
    if spec.condition is not None:
        problems.extend(check_condition(spec.condition))
    return problems


class ExperimentCreate(ExperimentSpec):
    """The create request: a spec, started as a draft unless it says ``running``."""

    status: Literal["draft", "running"] = "draft"


class Experiment(ExperimentSpec):
    """A stored experiment: the spec plus lifecycle state and the optimistic-concurrency ``version``."""

    status: Status = "draft"
    version: Annotated[int, Field(ge=0)] = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def spec(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"status", "version", "created_at", "updated_at"})


class ExperimentEvent(BaseModel):
    """One entry of an experiment's history; ``before`` is None for a create."""

    id: int
    key: str
    action: Action
    actor: str
    reason: str = ""
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime


# Fields PATCH may change. key is identity; status moves only through pause/resume/stop so that every
# lifecycle step is a named event in the history.
MUTABLE_FIELDS: frozenset[str] = frozenset(ExperimentSpec.model_fields) - {"key"}


# --- errors -------------------------------------------------------------------------------------------


class ExperimentError(Exception):
    """Base class; ``status``/``code`` say how the API answers, ``details`` is machine-readable context."""

    status = 400
    code = "experiment_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message, self.details = message, details


class ExperimentNotFound(ExperimentError, LookupError):
    status, code = 404, "experiment_not_found"


class ExperimentExists(ExperimentError):
    status, code = 409, "experiment_exists"


class VersionConflict(ExperimentError):
    status, code = 409, "version_conflict"


class ExperimentConflict(ExperimentError):
    """Another live experiment holds the same surface or an overlapping namespace range."""

    status, code = 409, "experiment_conflict"


class InvalidTransition(ExperimentError):
    status, code = 409, "invalid_transition"


class InvalidExperiment(ExperimentError, ValueError):
    status, code = 422, "invalid_experiment"


def validation_message(exc: ValidationError) -> tuple[str, list[dict[str, str]]]:
    """A pydantic error as one readable line plus per-field details (the kit's format)."""
    details, parts = [], []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        details.append({"field": loc, "message": err.get("msg", "invalid")})
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid experiment: " + "; ".join(parts), details


# --- target validation -----------------------------------------------------------------------------

# Raises ValueError (message names the model and what exists) when a target cannot be served.
TargetValidator = Callable[[Target], None]


def registry_target_validator(registry: Any, services: Collection[str] | None = None) -> TargetValidator:
    """The default validator: the model and its alias/version must exist in the ModelRegistry, and the
    service (when ``services`` is given) must be one the gateway can route to."""
    from models.registry import ModelNotFound

    def validate(target: Target | Rerank) -> None:
        if services is not None and target.service not in services:
            raise ValueError(f"unknown service {target.service!r}; known services: {', '.join(sorted(services))}")
        try:
            family = registry.resolve(target.model, target.ref).manifest.family
        except ModelNotFound as exc:
            raise ValueError(str(exc)) from None
        # A ranker scores candidates it is given: it can only be a second stage, and only a ranker can be.
        is_stage_two = isinstance(target, Rerank)
        if (family in RANKER_FAMILIES) != is_stage_two:
            role = "a re-ranking stage needs a ranker" if is_stage_two else "a first stage must produce candidates"
            raise ValueError(
                f"{target.model}@{target.ref} is a {family!r} model; {role} (ranker families: "
                f"{', '.join(sorted(RANKER_FAMILIES))})"
            )
        if isinstance(target, Target) and target.rerank is not None:
            validate(target.rerank)

    return validate


def check_targets(spec: ExperimentSpec, validator: TargetValidator | None) -> None:
    """Run the validator over every variant; all failures in one InvalidExperiment (code unknown_model_target)."""
    if validator is None:
        return
    problems = []
    for v in spec.variants:
        try:
            validator(v.target)
        except (ValueError, LookupError) as exc:
            problems.append({"variant": v.key, "target": v.target.model_dump(), "message": str(exc)})
    if problems:
        err = InvalidExperiment(
            "; ".join(
                f"variant {p['variant']!r} ({p['target']['model']}@{p['target']['ref']}): {p['message']}"
                for p in problems
            ),
            problems,
        )
        err.code = "unknown_model_target"
        raise err


# --- tables --------------------------------------------------------------------------------------------

JSON_TYPE = JSON().with_variant(JSONB(), "postgresql")
_WRITE = "gateway_write"  # execution option marking a write transaction (SQLite: BEGIN IMMEDIATE)
_SCHEMA_LOCK_ID = 0x6A7E_0001
_WRITE_LOCK_ID = 0x6A7E_0002


class Base(DeclarativeBase):
    pass


class ExperimentRow(Base):
    __tablename__ = "experiments"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    surface: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON_TYPE)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExperimentEventRow(Base):
    __tablename__ = "experiment_events"
    __table_args__ = (Index("ix_experiment_events_key_id", "key", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON_TYPE, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON_TYPE, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StickyRow(Base):
    __tablename__ = "sticky_assignments"

    experiment_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash_attribute: Mapped[str] = mapped_column(String(64), primary_key=True)
    attribute_value: Mapped[str] = mapped_column(String(256), primary_key=True)
    variant_key: Mapped[str] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS experiment_events_no_update BEFORE UPDATE ON experiment_events "
    "BEGIN SELECT RAISE(ABORT, 'experiment_events is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS experiment_events_no_delete BEFORE DELETE ON experiment_events "
    "BEGIN SELECT RAISE(ABORT, 'experiment_events is append-only'); END",
]
_PG_GUARDS = [
    "CREATE OR REPLACE FUNCTION gateway_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused'; END $$",
    "CREATE TRIGGER experiment_events_append_only BEFORE UPDATE OR DELETE ON experiment_events "
    "FOR EACH ROW EXECUTE FUNCTION gateway_refuse_change()",
]
for _sql in _SQLITE_GUARDS:
    event.listen(ExperimentEventRow.__table__, "after_create", DDL(_sql).execute_if(dialect="sqlite"))
for _sql in _PG_GUARDS:
    event.listen(ExperimentEventRow.__table__, "after_create", DDL(_sql).execute_if(dialect="postgresql"))


class GatewayDbSettings(BaseSettings):
    """``RECSYS_GATEWAY_DB_URL`` (``postgresql+psycopg://...``); unset, a SQLite file in the data dir."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_GATEWAY_", extra="ignore")

    db_url: str | None = None


def default_url(data_dir: Path | None = None) -> str:
    if data_dir is None:
        from feature_store.config import FeatureStoreSettings

        data_dir = FeatureStoreSettings().data_dir
    return f"sqlite:///{Path(data_dir) / 'gateway.db'}"


def make_engine(url: str) -> Engine:
    """An engine with the schema in place (created if absent, under a lock on PostgreSQL)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

        db = engine.url.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    with engine.execution_options(**{_WRITE: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_ID})")
        Base.metadata.create_all(conn, checkfirst=True)
    return engine


def _utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# --- store ---------------------------------------------------------------------------------------------


class ExperimentStore:
    """Experiments, their history and sticky assignments in one SQL database shared by all replicas."""

    def __init__(self, url: str | None = None, data_dir: Path | None = None) -> None:
        self.url = url or GatewayDbSettings().db_url or default_url(data_dir)
        self.engine = make_engine(self.url)
        self._write_engine = self.engine.execution_options(**{_WRITE: True})
        self.sticky = StickyStore(self)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ExperimentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExperimentStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine) as s, s.begin():
            yield s

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One serialized write transaction: conflict checks and the write see the same state."""
        with Session(self._write_engine) as s, s.begin():
            if s.bind.dialect.name == "postgresql":
                s.execute(select(func.pg_advisory_xact_lock(_WRITE_LOCK_ID)))
            yield s

    # --- reading ---

    @staticmethod
    def _to_experiment(row: ExperimentRow) -> Experiment:
        return Experiment.model_validate(
            {
                **row.spec,
                "status": row.status,
                "version": row.version,
                "created_at": _utc(row.created_at),
                "updated_at": _utc(row.updated_at),
            }
        )

    def get(self, key: str) -> Experiment:
        with self._read() as s:
            row = s.get(ExperimentRow, key)
            if row is None:
                raise self._not_found(s, key)
            return self._to_experiment(row)

    def list(self, surface: str | None = None, status: str | None = None) -> list[Experiment]:
        """Experiments, filtered by surface and/or status, ordered by key."""
        q = select(ExperimentRow).order_by(ExperimentRow.key)
        if surface is not None:
            q = q.where(ExperimentRow.surface == surface)
        if status is not None:
            q = q.where(ExperimentRow.status == status)
        with self._read() as s:
            return [self._to_experiment(r) for r in s.scalars(q)]

    def running_for_surface(self, surface: str) -> list[Experiment]:
        return self.list(surface=surface, status="running")

    def history(self, key: str) -> list[ExperimentEvent]:
        """Every change of ``key``, newest first (as the registry's alias history)."""
        with self._read() as s:
            rows = list(
                s.scalars(
                    select(ExperimentEventRow)
                    .where(ExperimentEventRow.key == key)
                    .order_by(ExperimentEventRow.id.desc())
                )
            )
            if not rows:
                raise self._not_found(s, key)
            return [
                ExperimentEvent(
                    id=r.id,
                    key=r.key,
                    action=r.action,
                    actor=r.actor,
                    reason=r.reason or "",
                    before=r.before,
                    after=r.after,
                    at=_utc(r.at),
                )
                for r in rows
            ]

    def change_token(self) -> str:
        """Changes whenever any experiment changes: one indexed max() per table, cheap to poll.

        Every write appends an event under the write lock, so event ids grow in commit order and
        ``max(id)`` alone never misses a commit; ``max(updated_at)`` also catches a hand-edited row.
        """
        with self._read() as s:
            max_id = s.scalar(select(func.max(ExperimentEventRow.id)))
            max_updated = s.scalar(select(func.max(ExperimentRow.updated_at)))
        stamp = _utc(max_updated).isoformat() if max_updated is not None else "-"
        return f"{max_id or 0}@{stamp}"

    @staticmethod
    def _not_found(s: Session, key: str) -> ExperimentNotFound:
        keys = list(s.scalars(select(ExperimentRow.key).order_by(ExperimentRow.key).limit(50)))
        return ExperimentNotFound(
            f"unknown experiment {key!r}; experiments: {', '.join(keys) or 'none'}", {"known": keys}
        )

    # --- writing ---

    def create(
        self,
        spec: ExperimentCreate,
        actor: str = "admin",
        reason: str = "",
        target_validator: TargetValidator | None = None,
    ) -> Experiment:
        """Store a new experiment (draft, or running after the conflict checks); 409 on a duplicate key.

        ``target_validator`` refuses variants whose model, alias or version does not exist.
        """
        check_targets(spec, target_validator)
        now = datetime.now(UTC)
        exp = Experiment.model_validate(
            {**spec.model_dump(mode="json"), "version": 1, "created_at": now, "updated_at": now}
        )
        try:
            with self._write() as s:
                if s.get(ExperimentRow, exp.key) is not None:
                    raise ExperimentExists(f"experiment {exp.key!r} already exists", {"key": exp.key})
                if exp.status in LIVE:
                    self._check_conflicts(s, exp)
                s.add(
                    ExperimentRow(
                        key=exp.key,
                        surface=exp.surface,
                        status=exp.status,
                        version=exp.version,
                        spec=exp.spec(),
                        created_at=now,
                        updated_at=now,
                    )
                )
                s.flush()
                self._event(s, exp.key, "create", actor, reason, None, exp, now)
        except IntegrityError:  # a racing creator on a database without the write lock
            raise ExperimentExists(f"experiment {exp.key!r} already exists", {"key": exp.key}) from None
        log.info("experiment %s created (%s) by %s", exp.key, exp.status, actor)
        return exp

    def update(
        self,
        key: str,
        changes: Mapping[str, Any],
        expected_version: int,
        actor: str = "admin",
        reason: str = "",
        target_validator: TargetValidator | None = None,
    ) -> Experiment:
        """Apply ``changes`` (spec fields) if the stored version is still ``expected_version``.

        A stopped experiment is final. ``bucket_version`` may only grow: going back would revive
        sticky assignments that were deliberately dropped.
        """
        unknown = sorted(set(changes) - MUTABLE_FIELDS)
        if unknown:
            hint = " (status changes go through /pause, /resume and /stop)" if "status" in unknown else ""
            raise InvalidExperiment(f"fields that cannot be updated: {', '.join(unknown)}{hint}", {"fields": unknown})

        def apply(current: Experiment) -> Experiment:
            if current.status == "stopped":
                raise InvalidTransition(f"experiment {key!r} is stopped; stopped experiments are final")
            merged = {**current.spec(), **changes, "key": key}
            try:
                spec = ExperimentSpec.model_validate(merged)
            except ValidationError as exc:
                raise InvalidExperiment(*validation_message(exc)) from None
            if spec.bucket_version < current.bucket_version:
                raise InvalidExperiment(
                    f"bucket_version can only increase (current {current.bucket_version}, got {spec.bucket_version})"
                )
            if spec.variants != current.variants:
                check_targets(spec, target_validator)
            return Experiment.model_validate({**spec.model_dump(mode="json"), "status": current.status})

        return self._change(key, "update", actor, reason, expected_version, apply)

    def pause(
        self, key: str, actor: str = "admin", expected_version: int | None = None, reason: str = ""
    ) -> Experiment:
        """running -> paused: traffic goes back to the default, sticky assignments and the range are kept."""
        return self._transition(key, "pause", {"running"}, "paused", actor, expected_version, reason)

    def resume(
        self,
        key: str,
        actor: str = "admin",
        expected_version: int | None = None,
        reason: str = "",
        target_validator: TargetValidator | None = None,
    ) -> Experiment:
        """paused or draft -> running (resuming a draft starts it), after the conflict checks.

        Targets are checked again: an alias may have been deleted while the experiment was paused.
        """
        return self._transition(
            key, "resume", {"paused", "draft"}, "running", actor, expected_version, reason, target_validator
        )

    def stop(self, key: str, actor: str = "admin", expected_version: int | None = None, reason: str = "") -> Experiment:
        """Any status but stopped -> stopped, for good: frees the surface and the namespace range."""
        return self._transition(key, "stop", {"draft", "running", "paused"}, "stopped", actor, expected_version, reason)

    def _transition(
        self,
        key: str,
        action: Action,
        allowed: set[str],
        to: Status,
        actor: str,
        expected_version: int | None,
        reason: str,
        target_validator: TargetValidator | None = None,
    ) -> Experiment:
        def apply(current: Experiment) -> Experiment:
            if current.status not in allowed:
                raise InvalidTransition(
                    f"cannot {action} experiment {key!r}: it is {current.status} "
                    f"({action} needs {' or '.join(sorted(allowed))})",
                    {"status": current.status},
                )
            check_targets(current, target_validator)
            return current.model_copy(update={"status": to})

        return self._change(key, action, actor, reason, expected_version, apply)

    def _change(
        self,
        key: str,
        action: Action,
        actor: str,
        reason: str,
        expected_version: int | None,
        apply: Callable[[Experiment], Experiment],
    ) -> Experiment:
        with self._write() as s:
            row = s.get(ExperimentRow, key)
            if row is None:
                raise self._not_found(s, key)
            current = self._to_experiment(row)
            if expected_version is not None and expected_version != current.version:
                raise VersionConflict(
                    f"experiment {key!r} is at version {current.version}, not {expected_version}: "
                    "it changed since you read it; re-read and retry",
                    {"expected": expected_version, "current": current.version},
                )
            draft = apply(current)
            if action == "update" and draft.spec() == current.spec():
                return current  # nothing changed: no new version, no event
            now = datetime.now(UTC)
            new = Experiment.model_validate(
                {
                    **draft.spec(),
                    "status": draft.status,
                    "version": current.version + 1,
                    "created_at": current.created_at,
                    "updated_at": now,
                }
            )
            if new.status in LIVE:
                self._check_conflicts(s, new)
            row.spec, row.status, row.surface, row.version, row.updated_at = (
                new.spec(),
                new.status,
                new.surface,
                new.version,
                now,
            )
            self._event(s, key, action, actor, reason, current, new, now)
        log.info("experiment %s: %s by %s -> v%d (%s)", key, action, actor, new.version, new.status)
        return new

    @staticmethod
    def _event(
        s: Session,
        key: str,
        action: Action,
        actor: str,
        reason: str,
        before: Experiment | None,
        after: Experiment,
        at: datetime,
    ) -> None:
        s.add(
            ExperimentEventRow(
                key=key,
                action=action,
                actor=actor,
                reason=reason,
                before=before.model_dump(mode="json") if before else None,
                after=after.model_dump(mode="json"),
                at=at,
            )
        )

    def _check_conflicts(self, s: Session, exp: Experiment) -> None:
        """The exclusivity rules (docs/experiments.md), checked against every other live experiment.

        1. Same namespace name: ranges must be disjoint (namespaces are global exclusion groups).
        2. Same surface: both must sit in the same namespace with disjoint ranges; anything else would
           put one user in two experiments on one surface, and their effects could not be told apart.
        """
        others = s.scalars(
            select(ExperimentRow).where(ExperimentRow.status.in_(sorted(LIVE)), ExperimentRow.key != exp.key)
        )
        for row in others:
            other = self._to_experiment(row)
            ns, ons = exp.namespace, other.namespace
            details = {
                "other": other.key,
                "other_status": other.status,
                "other_surface": other.surface,
                "other_namespace": ons.model_dump() if ons else None,
            }
            if ns is not None and ons is not None and ns.overlaps(ons):
                raise ExperimentConflict(
                    f"namespace range {ns} of {exp.key!r} overlaps experiment {other.key!r} "
                    f"({other.status}) which holds {ons}",
                    details,
                )
            if other.surface == exp.surface and not (ns and ons and ns.name == ons.name):
                raise ExperimentConflict(
                    f"surface {exp.surface!r} already has live experiment {other.key!r} ({other.status}, "
                    f"namespace {ons or 'none'}); experiments may share a surface only inside one namespace "
                    "with disjoint ranges",
                    details,
                )


# --- sticky buckets --------------------------------------------------------------------------------------


class StickyStore:
    """Sticky assignments in the shared database with an in-process cache.

    A row is written once (first writer wins) and never changes, so cached hits never go stale.
    Misses are cached for ``negative_ttl_s`` only: another replica may assign the user meanwhile,
    and ``record`` returns that replica's variant if it got there first, so replicas converge.
    """

    def __init__(self, store: ExperimentStore, max_entries: int = 200_000, negative_ttl_s: float = 5.0) -> None:
        self._store = store
        self.max_entries = max_entries
        self.negative_ttl_s = negative_ttl_s
        self._hits: OrderedDict[tuple[str, int, str, str], str] = OrderedDict()
        self._misses: dict[tuple[str, int, str, str], float] = {}
        self._lock = threading.Lock()

    def _remember(self, k: tuple[str, int, str, str], variant: str) -> None:
        with self._lock:
            self._hits[k] = variant
            self._hits.move_to_end(k)
            self._misses.pop(k, None)
            while len(self._hits) > self.max_entries:
                self._hits.popitem(last=False)

    def lookup(self, experiment_key: str, bucket_version: int, hash_attribute: str, value: str) -> str | None:
        """The variant this user holds under ``bucket_version``, or None. Matches assignment.StickyLookup."""
        k = (experiment_key, bucket_version, hash_attribute, value)
        hit = self._hits.get(k)
        if hit is not None:
            return hit
        missed = self._misses.get(k)
        if missed is not None and time.monotonic() - missed < self.negative_ttl_s:
            return None
        with self._store._read() as s:
            variant = s.scalar(
                select(StickyRow.variant_key).where(
                    StickyRow.experiment_key == experiment_key,
                    StickyRow.bucket_version == bucket_version,
                    StickyRow.hash_attribute == hash_attribute,
                    StickyRow.attribute_value == value,
                )
            )
        if variant is None:
            with self._lock:
                if len(self._misses) > self.max_entries:
                    self._misses.clear()
                self._misses[k] = time.monotonic()
            return None
        self._remember(k, variant)
        return variant

    def record(self, experiment_key: str, bucket_version: int, hash_attribute: str, value: str, variant: str) -> str:
        """Insert the assignment unless one exists; returns the variant that is stored (maybe another's)."""
        k = (experiment_key, bucket_version, hash_attribute, value)
        values = dict(
            experiment_key=experiment_key,
            bucket_version=bucket_version,
            hash_attribute=hash_attribute,
            attribute_value=value,
            variant_key=variant,
            assigned_at=datetime.now(UTC),
        )
        engine = self._store._write_engine  # SQLite: BEGIN IMMEDIATE, so the insert queues instead of failing
        insert = pg_dialect.insert if engine.dialect.name == "postgresql" else sqlite_dialect.insert
        stmt = insert(StickyRow).values(**values).on_conflict_do_nothing().returning(StickyRow.variant_key)
        with Session(engine) as s, s.begin():
            stored = s.scalar(stmt)  # None when the row existed: then read the winner's
            if stored is None:
                stored = s.scalar(
                    select(StickyRow.variant_key).where(
                        StickyRow.experiment_key == experiment_key,
                        StickyRow.bucket_version == bucket_version,
                        StickyRow.hash_attribute == hash_attribute,
                        StickyRow.attribute_value == value,
                    )
                )
        stored = stored or variant
        self._remember(k, stored)
        return stored

    def clear_cache(self) -> None:
        with self._lock:
            self._hits.clear()
            self._misses.clear()


def assign_sticky(
    experiment: Experiment,
    attributes: Mapping[str, Any],
    forced: Mapping[str, str] | None = None,
    sticky: StickyStore | None = None,
) -> Assignment | None:
    """``assign`` with the database sticky store: look up, and record a fresh hashed assignment.

    If another replica recorded a different variant first (it had a different snapshot during a
    weight change), the stored one wins, so a user never sees two variants.
    """
    if sticky is None or not experiment.sticky_bucketing:
        return assign(experiment, attributes, forced)
    result = assign(experiment, attributes, forced, sticky.lookup)
    if result is None or result.reason != "hashed" or result.attribute_value is None or result.hash_attribute is None:
        return result
    stored = sticky.record(
        experiment.key, experiment.bucket_version, result.hash_attribute, result.attribute_value, result.variant_key
    )
    if stored == result.variant_key:
        return result
    idx = next((i for i, v in enumerate(experiment.variants) if v.key == stored), -1)
    if idx < 0:
        return result
    return Assignment(
        result.experiment_key,
        stored,
        idx,
        True,
        result.hash_value,
        "sticky",
        result.hash_attribute,
        result.attribute_value,
        result.bucket_version,
    )


# --- the replicas' cache ----------------------------------------------------------------------------------


class ExperimentSnapshot:
    """An immutable view of all experiments at one change token; lookups are dict reads."""

    def __init__(self, token: str, experiments: list[Experiment]) -> None:
        self.token = token
        self.experiments: dict[str, Experiment] = {e.key: e for e in experiments}
        running: dict[str, list[Experiment]] = {}
        for e in experiments:
            if e.status == "running":
                running.setdefault(e.surface, []).append(e)
        self._running = {k: tuple(v) for k, v in running.items()}

    def get(self, key: str) -> Experiment | None:
        return self.experiments.get(key)

    def running_for_surface(self, surface: str) -> tuple[Experiment, ...]:
        return self._running.get(surface, ())


class ExperimentCache:
    """Each replica's in-memory experiments, fresh within ``interval_s`` (+ one reload) of any change.

    Requests read the current snapshot without waiting. After ``start()`` (the gateway does it) a
    background thread polls ``change_token()`` every ``interval_s`` and reloads when it moved, so no
    request ever runs a query (polled from requests, the poll's two queries blocked the event loop
    for milliseconds every ``interval_s``: a p99 spike). Without the thread (tests with a fake
    clock), at most one caller per ``interval_s`` polls. If the database is down the last snapshot
    keeps serving (logged), which is better than failing every recommendation.
    """

    def __init__(
        self, store: ExperimentStore, interval_s: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._checked = clock()
        self.reloads = 0
        self._snapshot = self._load()
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Poll from a daemon thread from now on (idempotent)."""
        if self._poller is None:
            self._stop.clear()
            self._poller = threading.Thread(target=self._poll, name="experiment-cache", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        if self._poller is not None:
            self._stop.set()
            self._poller.join(timeout=5)
            self._poller = None

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh(force=True)

    def _load(self) -> ExperimentSnapshot:
        token = self.store.change_token()  # before the read: a change in between only causes one more reload
        snap = ExperimentSnapshot(token, self.store.list())
        self.reloads += 1
        return snap

    def refresh(self, force: bool = False) -> bool:
        """Poll (if due, or ``force``) and reload on change; True when a new snapshot was loaded."""
        now = self.clock()
        if not force and now - self._checked < self.interval_s:
            return False
        if not self._lock.acquire(blocking=force):
            return False  # another thread is polling; use the current snapshot
        try:
            self._checked = now
            if self.store.change_token() == self._snapshot.token:
                return False
            self._snapshot = self._load()
            return True
        except Exception:  # keep serving the last snapshot; the next poll retries
            log.exception("experiment cache refresh failed; serving snapshot %s", self._snapshot.token)
            return False
        finally:
            self._lock.release()

    def snapshot(self) -> ExperimentSnapshot:
        if self._poller is None:
            self.refresh()
        return self._snapshot

    def get(self, key: str) -> Experiment | None:
        return self.snapshot().get(key)

    def running_for_surface(self, surface: str) -> tuple[Experiment, ...]:
        return self.snapshot().running_for_surface(surface)
