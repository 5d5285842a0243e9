"""Aggregation over seeds and the report files (JSON with raw runs, generated markdown table)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.eval.report import aggregate, read_report, render_markdown_section, render_table, write_report


def runs(*hr: float) -> list[dict[str, float]]:
    return [{"HR@10": h, "NDCG@10": h / 2, "NDCG@100": h / 1.5, "users": 100, "seed": s} for s, h in enumerate(hr)]


def test_aggregate_mean_and_sample_std() -> None:
    agg = aggregate(runs(0.1, 0.2, 0.3))
    mean, std = agg["HR@10"]
    assert mean == pytest.approx(0.2)
    assert std == pytest.approx(0.1)  # sqrt(((0.1)^2 + 0 + (0.1)^2) / (3 - 1))
    assert "seed" not in agg
    assert agg["users"] == (100.0, 0.0)
    assert aggregate(runs(0.25))["HR@10"] == (0.25, 0.0)  # one run: std 0, not NaN
    assert aggregate([]) == {}
    assert math.isnan(aggregate([{"HR@10": 0.1}, {"HR@10": float("nan")}])["HR@10"][0])


def test_table_marks_the_best_model_per_dataset() -> None:
    results = {"ds1": {"pop": runs(0.1, 0.1, 0.1), "sasrec": runs(0.3, 0.2, 0.1)}, "ds2": {"pop": runs(0.05)}}
    table = render_table(results)
    lines = table.splitlines()
    assert lines[0] == "| dataset | model | HR@10 | NDCG@10 | NDCG@100 |"
    assert "| ds1 | sasrec | **0.2000 ± 0.1000** |" in table
    assert "| ds1 | pop | 0.1000 ± 0.0000 |" in table
    assert "| ds2 | pop | 0.0500 ± 0.0000 |" in table  # a lone model is not "best" of anything
    section = render_markdown_section(results, title="Sequential", protocol="LOO.")
    assert section.startswith("## Sequential\n") and "LOO." in section and table in section


def test_write_report_round_trips(tmp_path: Path) -> None:
    results = {"ml": {"pop": runs(0.1, 0.2, 0.3)}}
    results["ml"]["pop"][0]["NDCG@100"] = float("nan")
    pj, pm = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    write_report(pj, pm, results, protocol="The protocol text.", title="Seq results")
    payload = json.loads(pj.read_text())  # strict JSON: NaN written as null
    assert payload["title"] == "Seq results" and payload["protocol"] == "The protocol text."
    entry = payload["results"]["ml"]["pop"]
    assert len(entry["runs"]) == 3 and entry["runs"][0]["NDCG@100"] is None
    assert entry["aggregate"]["HR@10"]["mean"] == pytest.approx(0.2)
    md = pm.read_text()
    assert md.startswith("# Seq results\n") and "The protocol text." in md
    assert "| dataset | model | HR@10 | NDCG@10 | NDCG@100 |" in md and "| ml | pop | 0.2000 ± 0.1000 |" in md
    title, protocol, back = read_report(pj)
    assert (title, protocol) == ("Seq results", "The protocol text.")
    assert back["ml"]["pop"][1] == results["ml"]["pop"][1]
    assert math.isnan(back["ml"]["pop"][0]["NDCG@100"])
    write_report(tmp_path / "only.json", None, results, "p", "t")
    assert not (tmp_path / "only.md").exists()
