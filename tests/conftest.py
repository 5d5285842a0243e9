"""Shared fixtures: a private redis-server per test session, isolated feature store settings."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_store.config import FeatureStoreSettings


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
