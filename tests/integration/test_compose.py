"""docker-compose.yml is valid (Debian's docker-compose 1.29 checks it without an engine) and runs
the same service commands the e2e tests start."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from feature_store.config import REPO_ROOT
from services.commands import APPS, PORTS, service_command


def test_compose_file_is_valid_and_matches_the_tested_commands() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed; `make test` installs it (apt-get install docker-compose)")
    out = subprocess.run(
        [binary, "-f", str(REPO_ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]
    microservices = [n for n in APPS if n != "embedded"]
    assert {"redis", "postgres", "prometheus", "gateway", *microservices} <= set(resolved)
    for name in microservices:
        assert resolved[name]["command"] == ["python", "-m", *service_command(name, "0.0.0.0", PORTS[name])], name
    prometheus = yaml.safe_load((REPO_ROOT / "services" / "ops" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{n}:{PORTS[n]}" for n in microservices)
    assert "sequential" in resolved["gateway"]["environment"]["RECSYS_SERVICES"]


def test_grafana_dashboard_queries_metrics_the_services_export() -> None:
    import json

    from services.kit import metrics

    dash = json.loads((REPO_ROOT / "services" / "ops" / "grafana" / "recsys.json").read_text())
    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "labels")} | {
        "recsys_exposures",
        "recsys_degraded",
    }
    for panel in dash["panels"]:
        expr = panel["targets"][0]["expr"]
        assert any(name in expr for name in exported), expr
