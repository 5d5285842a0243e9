"""``recsys models ...`` end to end through typer, on a SQLite registry in a temporary data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from services.cli import app
from services.cli import models as models_cli
from tests.conftest import make_settings
from tests.unit.test_registry_artifacts import make_artifact, make_features

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RECSYS_REGISTRY_URL", raising=False)
    monkeypatch.setattr(models_cli, "console", Console(width=200))  # tables not truncated to 80 columns
    make_features(make_settings(tmp_path / "data"))
    return tmp_path / "data"


def recsys(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["models", *args])
    return result.exit_code, result.output


def test_register_list_show_alias_history(data_dir: Path, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", external=True)
    (tmp_path / "metrics.json").write_text(json.dumps({"ndcg@10": 0.25}))
    register = [
        "register",
        "--family=sequential",
        "--name=seq-lte",
        f"--artifact={art}",
        "--feature=lte_avg@v1",
        "--feature=recent_items@v1",
        "--dataset=synthetic",
        "--train-end=2024-03-01",
        f"--metrics-json={tmp_path / 'metrics.json'}",
        '--params-json={"variant": "avg", "top_k": 3}',
    ]
    code, out = recsys(*register)
    assert code == 0, out
    assert "registered seq-lte@v1 (sequential; lte_avg@v1, recent_items@v1" in out
    assert recsys(*register)[0] == 0
    assert (data_dir / "registry.db").exists() and (data_dir / "models" / "seq-lte" / "v2" / "model.onnx.data").exists()

    code, out = recsys("alias", "seq-lte", "champion", "1", "--reason=first deploy", "--actor=alice")
    assert code == 0 and "seq-lte/champion: (unset) -> v1" in out
    code, out = recsys("alias", "seq-lte", "champion", "v2", "--reason=better")
    assert code == 0 and "v1 -> v2" in out

    code, out = recsys("list")
    assert code == 0, out
    assert "seq-lte" in out and "v2" in out and "champion" in out and "ndcg@10=0.25" in out

    code, out = recsys("show", "seq-lte", "champion", "--json")
    assert code == 0, out
    manifest = json.loads(out)
    assert manifest["version"] == 2 and manifest["params"] == {"variant": "avg", "top_k": 3}
    assert manifest["onnx_data_files"] == ["model.onnx.data"]
    assert [p["ref"] for p in manifest["feature_refs"]] == ["lte_avg@v1", "recent_items@v1"]

    code, out = recsys("show", "seq-lte", "1")
    assert code == 0 and "seq-lte@v1" in out and "item_seq" in out and "fp-test-basis" in out

    code, out = recsys("history", "seq-lte")
    assert code == 0
    lines = [ln for ln in out.splitlines() if "champion" in ln]
    assert "better" in lines[0] and "first deploy" in lines[1] and "alice" in lines[1]

    code, out = recsys("verify", "seq-lte", "champion")
    assert code == 0 and "seq-lte@v2: 3 files match the manifest" in out

    code, out = recsys("unalias", "seq-lte", "champion")
    assert code == 0 and "v2 -> (unset)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "ghost"], "unknown model 'ghost'"),
        (["alias", "ghost", "champion", "1"], "unknown model 'ghost'"),
        (["register", "--family=music", "--name=x", "--artifact=.", "--dataset=d"], "unknown model family 'music'"),
        (
            ["register", "--family=sequential", "--name=x", "--artifact=.", "--dataset=d", "--metrics-json=/nope"],
            "--metrics-json",
        ),
    ],
)
def test_errors_exit_2_with_a_message_and_no_traceback(data_dir: Path, args: list[str], message: str) -> None:
    code, out = recsys(*args)
    assert code == 2, out
    assert "error:" in out and message in out
    assert "Traceback" not in out


def test_refused_registration_explains_why(data_dir: Path, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", exclude=False)
    code, out = recsys(
        "register", "--family=sequential", "--name=m", f"--artifact={art}", "--feature=lte_avg@v7", "--dataset=d"
    )
    assert code == 2 and "unknown feature version lte_avg@v7; available: lte_avg@v1, lte_avg@v2" in out
    code, out = recsys("register", "--family=sequential", "--name=m", f"--artifact={art}", "--dataset=d")
    assert code == 2 and "input 'exclude' (bool, rank 2) is missing" in out
    code, out = recsys("list")
    assert code == 0 and "no models registered" in out
