"""The basket service as a real process over a small synthetic store: replenishment, recorded purchases, batch.

One module-scoped build: synthetic grocery users -> purchase_history@v1 -> Feast apply + materialize
(SQLite) -> a small CASE trained, exported and registered by models/basket/pipeline.py (seeded and
epoch-bound, so the model is the same on a slow machine) -> the service started exactly as
docker-compose starts it (services/commands.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.conftest import free_port
from tests.e2e.helpers import start_service, stop_service

TOKEN = "e2e-basket-token"
SYNTHETIC = dict(n_users=500, grocery_user_fraction=0.8, n_items=400, n_creators=40, seed=0)


@pytest.fixture(scope="module")
def basket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from feature_store import feast_ops
    from feature_store.build import build_purchase_history
    from feature_store.config import FeatureStoreSettings
    from feature_store.sources.prepared import prepare
    from feature_store.sources.synthetic import SyntheticConfig, generate, ground_truth
    from feature_store.versions import VersionCatalog
    from models.basket.pipeline import DEMO, latest_history, train_register, with_overrides
    from models.registry import ModelRegistry
    from models.registry.store import default_url

    data_dir = tmp_path_factory.mktemp("basket-e2e")
    project = f"b{uuid.uuid4().hex[:10]}"
    settings = FeatureStoreSettings(data_dir=data_dir, project=project, online_store="sqlite")
    ds = generate(SyntheticConfig(**SYNTHETIC))  # type: ignore[arg-type]
    prepare(settings, ds)
    spec = build_purchase_history(settings, dataset="synthetic", every_days=30, show_progress=False)
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    feast_ops.materialize(settings, spec.ref, store)
    registry = ModelRegistry(url=default_url(data_dir), data_dir=data_dir, catalog=VersionCatalog(settings.catalog_dir))
    small = with_overrides(
        DEMO, epochs=8, max_seconds=None, patience=8, targets_per_user=4, lr=5e-3, batch_size=32, max_eval_users=200
    )
    manifest = train_register(settings, spec.ref, cfg=small, registry=registry)
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS_PROJECT": project,
        "RECSYS_ONLINE_STORE": "sqlite",
        "RECSYS_ADMIN_TOKEN": TOKEN,
        "RECSYS_BASKET_DEFAULT_AS_OF": "snapshot",
    }
    for var in ("REDIS_URL", "RECSYS_REGISTRY_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(var, None)
    port = free_port()
    proc = start_service("basket", port, env)
    rows = latest_history(settings, spec.ref).set_index("user_id")
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "settings": settings,
            "spec": spec,
            "store": store,
            "manifest": manifest,
            "registry": registry,
            "rows": rows,
            "staples": ground_truth(ds).staples,
            "env": env,
        }
    finally:
        stop_service(proc)
        registry.close()


def _staple_cases(b: dict[str, Any], cadence: int) -> list[tuple[str, str, int]]:
    """(user, staple item, last purchase day) for staples of ``cadence`` days bought at least 3 times."""
    from feature_store.pipelines.purchases import snapshot_day

    ref_day = snapshot_day(b["spec"].window.as_of)
    out = []
    for s in b["staples"][b["staples"].cadence_days == cadence].itertuples():
        if s.user_id not in b["rows"].index:
            continue
        row = b["rows"].loc[s.user_id]
        days = sorted(int(d) for i, d in zip(row.item_ids, row.days, strict=True) if i == s.item_id)
        if len(days) >= 3 and days[-1] + cadence <= ref_day + 90:
            out.append((str(s.user_id), str(s.item_id), days[-1]))
    return sorted(out)


def _ask(b: dict[str, Any], user: str, day: int, k: int = 100) -> dict[str, Any]:
    from services.basket.scoring import date_of

    r = httpx.post(f"{b['url']}/v1/recommend", json={"user_id": user, "as_of": date_of(day).isoformat(), "k": k})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is False, body
    return body


def _rank_score(body: dict[str, Any], item: str) -> tuple[int, float]:
    ids = [i["item_id"] for i in body["items"]]
    return ids.index(item), body["items"][ids.index(item)]["score"]


def test_a_due_staple_rises_as_days_pass_without_a_purchase(basket: dict[str, Any]) -> None:
    user, item, last = _staple_cases(basket, 30)[0]
    just_bought = _ask(basket, user, last + 1)
    due = _ask(basket, user, last + 30)
    assert [i["item_id"] for i in just_bought["items"]] != [i["item_id"] for i in due["items"]]
    rank_then, score_then = _rank_score(just_bought, item)
    rank_due, score_due = _rank_score(due, item)
    assert score_due > score_then, (score_then, score_due)
    assert rank_due < rank_then, (rank_then, rank_due)
    assert due["feature_versions"] == [basket["spec"].ref] and due["model"] == "case" and due["model_version"] == 1


def test_recorded_purchase_changes_the_next_answer(basket: dict[str, Any]) -> None:
    from feature_store.build import build_purchase_history
    from feature_store.pipelines.purchases import day_start, purchase_log_path, record_purchases
    from models.basket.pipeline import latest_history

    user, item, last = _staple_cases(basket, 30)[1]  # not the user the replenishment test reads
    day = last + 30
    before = _ask(basket, user, day)
    rank_before, score_before = _rank_score(before, item)
    bought_at = day_start(day - 1) + pd.Timedelta(hours=10)
    result = record_purchases(
        basket["settings"],
        basket["spec"].ref,
        [{"user_id": user, "item_id": item, "timestamp": bought_at.isoformat()}],
        store=basket["store"],
    )
    assert (result.events, result.users, result.new_users, result.pairs_added) == (1, 1, 0, 1)
    after = _ask(basket, user, day)
    rank_after, score_after = _rank_score(after, item)
    assert score_after < score_before and rank_after > rank_before, (rank_before, rank_after)
    assert after["feature_versions"] == before["feature_versions"] == [basket["spec"].ref]
    # The log keeps it for the next version build, which then holds the purchase offline too.
    log_path = purchase_log_path(basket["settings"], "synthetic")
    assert item in log_path.read_text()
    v2 = build_purchase_history(basket["settings"], dataset="synthetic", every_days=30, show_progress=False)
    row = latest_history(basket["settings"], v2.ref).set_index("user_id").loc[user]
    assert (item, day - 1) in set(zip(row.item_ids, (int(d) for d in row.days), strict=True))


def test_unknown_user_fallback_and_default_as_of_over_http(basket: dict[str, Any]) -> None:
    from feature_store.pipelines.purchases import snapshot_day
    from services.basket.scoring import date_of

    r = httpx.post(f"{basket['url']}/v1/recommend", json={"user_id": "not-a-shopper", "k": 4})
    body = r.json()
    assert r.status_code == 200 and body["fallback"] is True and "unknown user" in body["fallback_reason"]
    assert len(body["items"]) == 4
    # RECSYS_BASKET_DEFAULT_AS_OF=snapshot: the day after the snapshot's data.
    assert body["as_of"] == date_of(snapshot_day(basket["spec"].window.as_of)).isoformat()
    r = httpx.post(f"{basket['url']}/v1/recommend", json={"user_id": "u0001", "as_of": "yesterday"})
    assert r.status_code == 422 and "as_of" in r.json()["error"]["message"]


def test_batch_job_scores_every_user_like_the_service(
    basket: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from services.cli.batch import app

    for var in ("RECSYS_DATA_DIR", "RECSYS_PROJECT", "RECSYS_ONLINE_STORE"):
        monkeypatch.setenv(var, basket["env"][var])
    for var in ("REDIS_URL", "RECSYS_REGISTRY_URL"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "basket.parquet"
    res = CliRunner().invoke(app, ["basket", "--out", str(out), "--k", "5", "--batch-size", "100"])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out)
    users = set(basket["rows"].index)
    assert set(frame.user_id) == users
    assert (frame.groupby("user_id").size() == 5).all()
    assert not frame.fallback.any()
    assert set(frame.feature_version) == {basket["spec"].ref} and set(frame.model_version) == {1}
    as_of = frame.as_of.iloc[0]
    assert (frame.as_of == as_of).all()
    # Same code as the service: a user's batch list is the service's answer for that day.
    user = sorted(users)[7]
    from services.basket.scoring import day_number_of

    served = _ask(basket, user, day_number_of(as_of), k=5)
    mine = frame[frame.user_id == user].sort_values("rank")
    assert mine.item_id.tolist() == [i["item_id"] for i in served["items"]]
    res = CliRunner().invoke(app, ["basket", "--out", str(out), "--as-of", "2020-01-01"])
    assert res.exit_code == 2 and "outside" in res.output


def test_record_purchases_command_makes_a_new_user_known(
    basket: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from feature_store.pipelines.purchases import snapshot_day
    from services.basket.scoring import date_of
    from services.cli.batch import record_purchases_cmd

    for var in ("RECSYS_DATA_DIR", "RECSYS_PROJECT", "RECSYS_ONLINE_STORE"):
        monkeypatch.setenv(var, basket["env"][var])
    monkeypatch.delenv("REDIS_URL", raising=False)
    cli = typer.Typer()
    cli.command()(record_purchases_cmd)
    ref_day = snapshot_day(basket["spec"].window.as_of)
    item = str(basket["rows"].iloc[0].item_ids[0])
    when = date_of(ref_day - 3).isoformat() + "T12:00:00Z"
    user = "brand-new-shopper"
    assert httpx.post(f"{basket['url']}/v1/recommend", json={"user_id": user}).json()["fallback"] is True
    res = CliRunner().invoke(cli, [basket["spec"].ref, "--event", f"{user},{item},{when}"])
    assert res.exit_code == 0, res.output
    assert '"new_users": 1' in res.output
    body = httpx.post(f"{basket['url']}/v1/recommend", json={"user_id": user, "k": 50}).json()
    assert body["fallback"] is False
    assert {i["item_id"] for i in body["items"] if i["repeat"]} == {item}
    bad = CliRunner().invoke(cli, [basket["spec"].ref, "--event", "only,two"])
    assert bad.exit_code != 0 and "user_id,item_id,timestamp" in bad.output
