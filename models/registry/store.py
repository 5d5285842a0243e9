"""The registry's tables and engine (SQLAlchemy 2): SQLite by default, PostgreSQL by URL.

Tables
  model_versions  one row per registered version; unique (name, version); never updated
  feature_pins    (model version, feature ref) pairs, so ``pinned_by`` is an indexed lookup, not a
                  scan of every manifest's JSON
  aliases         the current (name, alias) -> version
  alias_events    append-only history of every alias change

Immutability is enforced in the database too: triggers refuse UPDATE on model_versions and
UPDATE/DELETE on alias_events, so no later code path (or hand-written SQL) rewrites history.

Concurrency: the version number is ``max + 1`` inserted under the unique constraint. On
PostgreSQL a second inserter of the same number blocks on the unique index until the first
commits, then fails and retries with the next number. On SQLite every write transaction starts
with ``BEGIN IMMEDIATE`` (the writer lock), so writers queue instead of failing with
"database is locked" on a lock upgrade; reads use WAL and never wait for writers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSON_TYPE = JSON().with_variant(JSONB(), "postgresql")
# Execution option that marks a write transaction (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "registry_write"
_SCHEMA_LOCK_ID = 0x5EC_0DE1  # PostgreSQL advisory lock held while creating the schema


class Base(DeclarativeBase):
    pass


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON_TYPE)
    # Relative to the registry's data dir, so the data dir can move (or be mounted elsewhere).
    artifact_path: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    pins: Mapped[list[FeaturePinRow]] = relationship(back_populates="model_version", cascade="all, delete-orphan")


class FeaturePinRow(Base):
    __tablename__ = "feature_pins"
    __table_args__ = (UniqueConstraint("model_version_id", "ref", name="uq_feature_pins_version_ref"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    # Denormalized so pinned_by needs no join.
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    ref: Mapped[str] = mapped_column(String(128), index=True)
    schema_hash: Mapped[str] = mapped_column(String(128))
    basis_fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)

    model_version: Mapped[ModelVersionRow] = relationship(back_populates="pins")


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (ForeignKeyConstraint(["name", "version"], ["model_versions.name", "model_versions.version"]),)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AliasEventRow(Base):
    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_name_alias", "name", "alias", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- append-only guards -------------------------------------------------------------------------

_SQLITE_TRIGGERS = [
    (
        ModelVersionRow.__table__,
        "CREATE TRIGGER IF NOT EXISTS model_versions_immutable BEFORE UPDATE ON model_versions "
        "BEGIN SELECT RAISE(ABORT, 'model_versions rows are immutable'); END",
    ),
    (
        AliasEventRow.__table__,
        "CREATE TRIGGER IF NOT EXISTS alias_events_no_update BEFORE UPDATE ON alias_events "
        "BEGIN SELECT RAISE(ABORT, 'alias_events is append-only'); END",
    ),
    (
        AliasEventRow.__table__,
        "CREATE TRIGGER IF NOT EXISTS alias_events_no_delete BEFORE DELETE ON alias_events "
        "BEGIN SELECT RAISE(ABORT, 'alias_events is append-only'); END",
    ),
]
# No '%' placeholders: DDL strings go through Python %-formatting on the way to the driver.
_PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION registry_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused'; END $$"
)
_PG_TRIGGERS = [
    (
        ModelVersionRow.__table__,
        "CREATE TRIGGER model_versions_immutable BEFORE UPDATE ON model_versions "
        "FOR EACH ROW EXECUTE FUNCTION registry_refuse_change()",
    ),
    (
        AliasEventRow.__table__,
        "CREATE TRIGGER alias_events_append_only BEFORE UPDATE OR DELETE ON alias_events "
        "FOR EACH ROW EXECUTE FUNCTION registry_refuse_change()",
    ),
]

event.listen(Base.metadata, "before_create", DDL(_PG_FUNCTION).execute_if(dialect="postgresql"))
for _table, _sql in _SQLITE_TRIGGERS:
    event.listen(_table, "after_create", DDL(_sql).execute_if(dialect="sqlite"))
for _table, _sql in _PG_TRIGGERS:
    event.listen(_table, "after_create", DDL(_sql).execute_if(dialect="postgresql"))


# --- engine ---------------------------------------------------------------------------------------


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'registry.db'}"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would BEGIN (deferred) behind our back; we issue BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine with the schema in place. SQLite parents are created; the schema is created if absent."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        _sqlite_setup(engine)
        db = engine.url.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    create_schema(engine)
    return engine


def create_schema(engine: Engine) -> None:
    """Create missing tables (idempotent). On PostgreSQL under an advisory lock, so two processes starting
    against an empty database do not race on CREATE TABLE."""
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_ID})")
        Base.metadata.create_all(conn, checkfirst=True)


def as_utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything the registry stores is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
