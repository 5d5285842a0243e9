"""Prometheus multiprocess bookkeeping: gauge modes, the launcher's clean start, reaping dead workers.

The behaviour with real workers is tests/e2e/test_metrics_multiprocess.py; these pin the pieces.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import Gauge

from services.commands import service_command
from services.kit.metrics import reap_dead_workers
from services.kit.serve import prepare_multiprocess_dir

SERVICE_MODULES = (
    "services.kit.metrics",
    "services.kit.batching",
    "services.kit.features",
    "services.gateway.app",
    "services.sequential.app",
    "services.features.app",
)


def test_every_service_gauge_says_how_worker_processes_combine() -> None:
    # The default mode ("all") exports one series per pid, dead workers' included, forever.
    gauges = []
    for name in SERVICE_MODULES:
        module = importlib.import_module(name)
        gauges += [(name, attr, v) for attr, v in vars(module).items() if isinstance(v, Gauge)]
    assert gauges, "expected at least the batcher's pending gauge"
    for module, attr, gauge in gauges:
        assert gauge._multiprocess_mode != "all", f"{module}.{attr} needs an explicit multiprocess_mode"


def test_the_launcher_empties_only_metric_files(tmp_path: Path) -> None:
    d = tmp_path / "prom"
    assert prepare_multiprocess_dir({}) is None
    assert prepare_multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(d)}) == d and d.is_dir()
    (d / "counter_123.db").write_bytes(b"x")
    (d / "histogram_456.db").write_bytes(b"x")
    (d / "notes.txt").write_text("not ours")
    prepare_multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(d)})
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]


def test_scrapes_drop_live_gauges_of_dead_workers_but_keep_their_counts(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid no longer runs
    dead_pid, live_pid = gone.pid, os.getpid()
    for name in (f"gauge_livesum_{dead_pid}.db", f"gauge_livesum_{live_pid}.db", f"histogram_{dead_pid}.db"):
        (tmp_path / name).write_bytes(b"x")
    assert reap_dead_workers(tmp_path) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"gauge_livesum_{live_pid}.db", f"histogram_{dead_pid}.db"]
    )


def test_service_command_workers_option() -> None:
    one = service_command("sequential", "127.0.0.1", 8001)
    assert one[0] == "services.kit.serve" and "--workers" not in one
    two = service_command("sequential", "127.0.0.1", 8001, workers=2)
    assert two[-2:] == ["--workers", "2"] and two[:-2] == one
    with pytest.raises(ValueError):
        service_command("sequential", "127.0.0.1", 8001, workers=0)
