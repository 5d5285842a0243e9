"""E2E fixtures: one demo build per test session, shared by every e2e module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feature_store.config import REPO_ROOT

RECSYS = str(Path(sys.executable).parent / "recsys")


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data_dir = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir), "RECSYS_ONLINE_STORE": "sqlite"}
    # Private stores only. PROMETHEUS_MULTIPROC_DIR: `import feast` sets it in this test process to a
    # temp dir of its own; services started with it would share (and, at start-up, empty) one dir.
    for var in ("REDIS_URL", "RECSYS_REGISTRY_URL", "RECSYS_GATEWAY_DB_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(var, None)
    out = subprocess.run(
        [RECSYS, "demo", "build", "--users", "400"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo built" in out.stdout
    return env
