"""Helpers shared by the e2e modules: real service processes, private stores, steady traffic."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from feature_store.config import REPO_ROOT
from services.commands import service_command

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_service(name: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    """Start ``name`` exactly as docker-compose does (services/commands.py) and wait until it is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *service_command(name, "127.0.0.1", port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not start: " + proc.stderr.read().decode()[-2000:])  # type: ignore[union-attr]


def stop_service(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


async def drive_load(url: str, users: list[str], seconds: float, rate: float) -> list[dict]:
    """``rate`` recommendation requests per second for ``seconds``, not waiting for answers before sending
    the next (an open loop, like real clients). Each result carries its status, its send time ``t``
    (``time.monotonic()``) and, for a 200, the response body; a transport error is status -1."""
    out: list[dict] = []
    async with httpx.AsyncClient(timeout=10) as client:
        start = time.perf_counter()
        tasks = []
        i = 0
        while time.perf_counter() - start < seconds:
            body = {"user_id": users[i % len(users)], "surface": "home", "k": 5}
            sent = time.monotonic()

            async def one(b: dict = body, t: float = sent) -> None:
                try:
                    r = await client.post(f"{url}/v1/recommendations", json=b)
                    out.append({"status": r.status_code, "t": t, **(r.json() if r.status_code == 200 else {})})
                except httpx.HTTPError as exc:
                    out.append({"status": -1, "t": t, "error": repr(exc)})

            tasks.append(asyncio.create_task(one()))
            i += 1
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    return sorted(out, key=lambda x: x["t"])


def copy_demo_data(demo_env: dict[str, str], dest: Path, models: bool = True, online: bool = True) -> Path:
    """A private copy of the session's demo data dir, for tests that change stores others read.

    Without ``models`` the model registry (its SQLite file and artifacts) is left out, for a test that
    registers the demo model into another registry database; without ``online`` the SQLite online
    store is left out, for a test that materializes into Redis.
    """
    skip = ["exposures.jsonl", "gateway.db*"]
    if not models:
        skip += ["models", "registry.db*"]
    if not online:
        skip += ["online_store.db*"]
    shutil.copytree(Path(demo_env["RECSYS_DATA_DIR"]), dest, ignore=shutil.ignore_patterns(*skip))
    return dest


def register_copy(
    data_dir: Path, feature_refs: list[str], registry_url: str | None = None, source_data_dir: Path | None = None
) -> int:
    """Register a new version of seq-lte with the demo v1 artifact (same weights) pinning ``feature_refs``.

    The copy goes into the registry at ``registry_url`` (default: ``data_dir``'s SQLite registry); v1 is read
    from ``source_data_dir``'s SQLite registry (default: that same registry).
    """
    from models.registry import ModelRegistry
    from models.registry.store import default_url

    registry = ModelRegistry(url=registry_url or default_url(data_dir), data_dir=data_dir)
    source = registry if source_data_dir is None else ModelRegistry(default_url(source_data_dir), source_data_dir)
    try:
        v1 = source.get("seq-lte", 1)
        with tempfile.TemporaryDirectory() as tmp:
            art = Path(tmp) / "artifact"
            shutil.copytree(v1.path, art, ignore=shutil.ignore_patterns("registry_manifest.json"))
            for p in art.iterdir():
                p.chmod(0o644)
            m = registry.register(
                family="sequential",
                name="seq-lte",
                artifact_dir=art,
                feature_refs=feature_refs,
                training=v1.manifest.training,
                metrics=dict(v1.manifest.metrics),
                params=dict(v1.manifest.params),
            )
    finally:
        registry.close()
        if source is not registry:
            source.close()
    return int(m.version)


class RedisServer:
    """A private redis-server this test starts, kills and restarts on the same port and data dir."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; `make test` installs it (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Snapshots only when asked (SAVE): what a restart loads is exactly what the test saved.
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [binary, *args, "--dir", str(self.workdir), "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.kill()
        pytest.fail(f"private redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-traffic without a goodbye (nor a final snapshot)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
