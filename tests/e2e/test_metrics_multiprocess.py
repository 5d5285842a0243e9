"""/metrics with two uvicorn workers: exact totals whichever worker answers the scrape.

The sequential service is started by the production start command (``service_command(...,
workers=2)``, the launcher in services/kit/serve.py) with a private PROMETHEUS_MULTIPROC_DIR that
already holds a previous run's files. The test proves that both workers served requests (each
worker's own counter file), so a per-process registry could not report the total; that every
scrape reports exactly the number of requests sent, so the stale files were removed; that a killed
worker's counts survive it; and that workers' live gauges disappear when they exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from feature_store.config import REPO_ROOT
from services.commands import service_command
from tests.conftest import free_port

ROUTE = "/v1/recommend"
STALE = 1000


def _stale_previous_run(mp_dir: Path) -> Path:
    """Counts for the very series the test checks, written by another process as a past run would."""
    code = (
        "from services.kit.metrics import REQUEST_LATENCY\n"
        f"h = REQUEST_LATENCY.labels('sequential', '{ROUTE}', 'POST', '200', 'seq-lte', '1')\n"
        f"for _ in range({STALE}): h.observe(0.001)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, check=True)
    (stale,) = mp_dir.glob("histogram_*.db")
    return stale


def _per_worker(mp_dir: Path, route: str) -> dict[int, float]:
    """Requests on ``route`` counted in each worker's own file: who served what."""
    out: dict[int, float] = {}
    for f in mp_dir.glob("histogram_*.db"):
        pid = int(f.stem.rsplit("_", 1)[1])
        total = 0.0
        for metric in MultiProcessCollector.merge([str(f)], accumulate=True):
            for s in metric.samples:
                if s.name == "recsys_request_seconds_count" and s.labels.get("route") == route:
                    total += s.value
        out[pid] = total
    return out


def _scraped_count(base: str) -> float:
    # A fresh connection per scrape: the kernel may hand it to either worker.
    text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}, timeout=10).text
    total = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name == "recsys_request_seconds":
            for s in fam.samples:
                if s.name.endswith("_count") and s.labels.get("route") == ROUTE:
                    total += s.value
    return total


async def _send(base: str, n: int, users: list[str]) -> None:
    # No keep-alive: every request is a new connection, so both workers get some.
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            async with sem:
                r = await client.post(ROUTE, json={"user_id": users[i % len(users)], "k": 5})
                assert r.status_code == 200, r.text

        await asyncio.gather(*(one(i) for i in range(n)))


def _poke(base: str) -> None:
    """One /readyz on a fresh connection; refused while no worker listens yet."""
    with contextlib.suppress(httpx.TransportError):
        httpx.get(f"{base}/readyz", headers={"Connection": "close"}, timeout=2)


def _wait_ready(base: str, proc: subprocess.Popen, mp_dir: Path, workers: int) -> None:
    """Ready when ``workers`` distinct pids have answered /readyz (each records it in its own file)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("service exited: " + proc.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
        _poke(base)
        if sum(1 for v in _per_worker(mp_dir, "/readyz").values() if v) >= workers:
            return
        time.sleep(0.05)
    pytest.fail("the workers did not both become ready")


def test_two_workers_report_exact_request_totals(demo_env: dict[str, str], tmp_path: Path) -> None:
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    stale = _stale_previous_run(mp_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**demo_env, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", *service_command("sequential", "127.0.0.1", port, workers=2)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_ready(base, proc, mp_dir, workers=2)
        assert not stale.exists(), "the start command must empty PROMETHEUS_MULTIPROC_DIR before workers start"
        users = [f"u{i:03d}" for i in range(1, 60)]
        sent = 0
        for _ in range(10):  # until both workers have served some (virtually always the first round)
            asyncio.run(_send(base, 100, users))
            sent += 100
            served = _per_worker(mp_dir, ROUTE)
            if sum(1 for v in served.values() if v) >= 2:
                break
        served = _per_worker(mp_dir, ROUTE)
        assert sum(1 for v in served.values() if v) == 2, f"one worker served everything: {served}"
        assert sum(served.values()) == sent, served  # and nothing left over from the stale run
        for _ in range(20):  # every scrape, whichever worker answers it, sees every worker's requests
            assert _scraped_count(base) == sent
        scrapes = _per_worker(mp_dir, "/metrics")
        assert sum(1 for v in scrapes.values() if v) == 2, f"the scrapes all hit one worker: {scrapes}"

        # A killed worker cannot clean up: its counts stay in the total, its live gauges are dropped.
        victim = max(served, key=lambda pid: served[pid])
        assert (mp_dir / f"gauge_livesum_{victim}.db").exists(), "the batcher's pending gauge is per worker"
        before = set(_per_worker(mp_dir, "/readyz"))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not set(_per_worker(mp_dir, "/readyz")) - before:  # uvicorn's master starts a replacement
            if time.monotonic() > deadline:
                pytest.fail("no replacement worker came up")
            _poke(base)
            time.sleep(0.1)
        asyncio.run(_send(base, 100, users))
        sent += 100
        assert _scraped_count(base) == sent
        assert not (mp_dir / f"gauge_livesum_{victim}.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Workers that stop normally remove their live gauges themselves (kit lifespan: worker_exiting).
    assert not list(mp_dir.glob("gauge_live*.db")), list(mp_dir.iterdir())
