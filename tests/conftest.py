"""Shared fixtures: a private redis-server and PostgreSQL database per test session, isolated settings."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from feature_store.config import FeatureStoreSettings

PG_ADMIN_URL = os.environ.get("RECSYS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def private_postgres_database(prefix: str = "recsys_test") -> Iterator[str]:
    """A private PostgreSQL database (SQLAlchemy URL) created for the caller and dropped (forcibly) after."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (set RECSYS_TEST_PG_URL): {exc.orig}")
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def private_schema_url(database_url: str) -> str:
    """A fresh schema in ``database_url`` and a URL whose connections use it (one test, one schema)."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    return sa.make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port: tests never touch a user's Redis."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; `make test` installs it (apt-get install redis-server)")
    import redis

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("private redis-server did not start")
    yield url
    client.close()
    proc.terminate()
    proc.wait(timeout=10)


def make_settings(data_dir: Path, online_store: str = "sqlite", redis_url: str | None = None) -> FeatureStoreSettings:
    # A unique Feast project per test: every Redis key carries it, so tests sharing the private
    # server never see each other's rows.
    return FeatureStoreSettings(
        data_dir=data_dir,
        project=f"t{uuid.uuid4().hex[:10]}",
        online_store=online_store,
        redis_url=redis_url,
    )


@pytest.fixture(params=["sqlite", "redis"])
def fs_settings(request: pytest.FixtureRequest, tmp_path: Path) -> FeatureStoreSettings:
    if request.param == "redis":
        return make_settings(tmp_path, "redis", request.getfixturevalue("redis_url"))
    return make_settings(tmp_path, "sqlite")
