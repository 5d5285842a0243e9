"""The basket service in process: a tiny CASE (one epoch) over a small synthetic purchase_history version.

The online store is replaced by a stub that serves the version's newest rows (no Feast here); the
model is trained, exported and registered by models/basket/pipeline.py exactly as the demo does.
The trained-model behaviour (replenishment, recorded purchases) is in tests/e2e/test_basket_service.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from feature_store.online import FeatureRows
from feature_store.versions import VersionCatalog
from services.basket.app import (
    AsOfWindow,
    BasketSettings,
    Job,
    RecommendRequest,
    as_of_window,
    build_app,
    recommend_batch,
    resolve_as_of,
)
from services.basket.scoring import date_of
from services.kit.errors import ApiError
from services.kit.features import ServiceFeatureClient
from services.kit.models import LoadedModel, ModelLoader
from tests.conftest import make_settings

TOKEN = "unit-admin-token"


class StubOnline:
    """The FeatureClient surface the service uses, serving a version's newest rows from memory."""

    def __init__(self, catalog: VersionCatalog, rows: dict[str, tuple[list[str], list[int]]]) -> None:
        self.catalog = catalog
        self.rows = rows
        self.reader = SimpleNamespace(store_name="stub")
        self.fail = False
        self.reads = 0

    def version(self, ref: str) -> Any:
        return self.catalog.resolve(ref)

    def read(self, ref: str, ids: Sequence[str], features: Any = None, missing: str = "default") -> FeatureRows:
        if self.fail:
            raise ConnectionError("online store down")
        self.reads += 1
        present = np.array([u in self.rows for u in ids], dtype=bool)
        values = {
            "item_ids": [list(self.rows.get(u, ([], []))[0]) for u in ids],
            "days": [list(self.rows.get(u, ([], []))[1]) for u in ids],
        }
        return FeatureRows(ref=ref, entity_ids=list(ids), present=present, values=values, raw_ts=[None] * len(ids))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from feature_store.build import build_purchase_history
    from feature_store.sources.prepared import prepare
    from feature_store.sources.synthetic import SyntheticConfig, generate
    from models.basket.pipeline import DEMO, latest_history, train_register, with_overrides
    from models.registry import ModelRegistry
    from models.registry.store import default_url

    data_dir = tmp_path_factory.mktemp("basket-unit")
    settings = make_settings(data_dir, "sqlite")
    prepare(
        settings, generate(SyntheticConfig(n_users=120, grocery_user_fraction=1.0, n_items=150, n_creators=15, seed=3))
    )
    spec = build_purchase_history(settings, dataset="synthetic", every_days=30, show_progress=False)
    registry = ModelRegistry(url=default_url(data_dir), data_dir=data_dir, catalog=VersionCatalog(settings.catalog_dir))
    tiny = with_overrides(DEMO, epochs=1, max_seconds=None, targets_per_user=1, n_explore=20)
    manifest = train_register(settings, spec.ref, cfg=tiny, registry=registry)
    latest = latest_history(settings, spec.ref)
    rows = {
        u: (list(i), [int(d) for d in ds])
        for u, i, ds in zip(latest.user_id, latest.item_ids, latest.days, strict=True)
    }
    stub = StubOnline(VersionCatalog(settings.catalog_dir), rows)
    features = ServiceFeatureClient("basket", stub)  # type: ignore[arg-type]
    app = build_app(BasketSettings(admin_token=SecretStr(TOKEN)), settings, registry, features)
    with TestClient(app) as client:
        yield {
            "settings": settings,
            "spec": spec,
            "manifest": manifest,
            "registry": registry,
            "rows": rows,
            "stub": stub,
            "features": features,
            "client": client,
            "model": ModelLoader(registry).get("case", 1),
        }
    registry.close()


def _busy_user(env: dict[str, Any]) -> str:
    return max(env["rows"], key=lambda u: (len(set(env["rows"][u][0])), u))


def _ref_day(env: dict[str, Any]) -> int:
    return as_of_window(env["features"], env["spec"].ref, 90).reference_day


def test_known_user_gets_a_ranking_with_pinned_versions(env: dict[str, Any]) -> None:
    user, day = _busy_user(env), _ref_day(env)
    r = env["client"].post("/v1/recommend", json={"user_id": user, "as_of": date_of(day).isoformat(), "k": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is False and body["fallback_reason"] is None
    assert body["model"] == "case" and body["model_version"] == 1
    assert body["feature_versions"] == [env["spec"].ref] == [p.ref for p in env["manifest"].feature_refs]
    assert body["as_of"] == date_of(day).isoformat()
    items = body["items"]
    assert len(items) == 8 and len({i["item_id"] for i in items}) == 8
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    bought = set(env["rows"][user][0])
    assert all(i["repeat"] == (i["item_id"] in bought) for i in items)
    # The same request pinned to the version number answers the same.
    again = env["client"].post(
        "/v1/recommend", json={"user_id": user, "as_of": date_of(day).isoformat(), "k": 8, "model_version": "1"}
    )
    assert again.json()["items"] == items


def test_past_as_of_uses_only_earlier_purchases_and_matches_the_reference_scorer(env: dict[str, Any]) -> None:
    from models.basket.export import OnnxCASE

    user = _busy_user(env)
    items, days = env["rows"][user]
    cut = sorted(set(days))[len(set(days)) // 2]  # a purchase day in the middle of the history
    r = env["client"].post("/v1/recommend", json={"user_id": user, "as_of": date_of(cut).isoformat(), "k": 100})
    assert r.status_code == 200, r.text
    served = [(i["item_id"], i["score"]) for i in r.json()["items"]]
    # What the model helper's scorer gives for the history cut before the as-of day: the same list.
    scorer = OnnxCASE(env["registry"].get("case", 1).path)
    truncated = [(i, d) for i, d in zip(items, days, strict=True) if d < cut]
    expected = scorer.recommend([truncated], cut, k=100)[0]
    assert [i for i, _ in served] == [i for i, _ in expected]
    assert np.allclose([s for _, s in served], [s for _, s in expected], atol=1e-5)
    later_only = {i for i, d in zip(items, days, strict=True) if d >= cut} - {i for i, _ in truncated}
    repeat = {i["item_id"] for i in r.json()["items"] if i["repeat"]}
    assert not later_only & repeat, "an item first bought on/after as_of must not be a repeat candidate"
    assert repeat == {i for i, _ in truncated}


def test_unknown_user_gets_the_flagged_popularity_fallback(env: dict[str, Any]) -> None:
    r = env["client"].post("/v1/recommend", json={"user_id": "nobody-knows-me", "k": 5, "as_of": "2024-12-01"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is True and "unknown user" in body["fallback_reason"]
    model: LoadedModel = env["model"]
    popular = json.loads((Path(model.path) / "popular.json").read_text())
    assert [i["item_id"] for i in body["items"]] == [str(model.item_ids[x]) for x in popular[:5]]
    assert body["feature_versions"] == [env["spec"].ref]


def test_bad_input_is_4xx_with_a_clear_message(env: dict[str, Any]) -> None:
    day = _ref_day(env)
    too_late = date_of(day + 91).isoformat()
    too_early = date_of(day - 365).isoformat()
    cases = [
        ({"user_id": "u1", "as_of": "2024-13-45"}, 422, "as_of"),
        ({"user_id": "u1", "as_of": "2024-12-31T10:00:00"}, 422, "as_of"),
        ({"user_id": "u1", "as_of": 20000}, 422, "as_of"),
        ({"user_id": "u1", "k": 0}, 422, "k"),
        ({"user_id": "u1", "k": 101}, 422, "basket_max_k"),
        ({"user_id": "", "k": 5}, 422, "user_id"),
        ({"user_id": "u1", "bogus": 1}, 422, "bogus"),
        ({"user_id": "u1", "as_of": too_late}, 422, "after the purchase history snapshot"),
        ({"user_id": "u1", "as_of": too_early}, 422, "earliest day"),
        ({"user_id": "u1", "model_version": "v99"}, 404, "case"),
        ({"user_id": "u1", "model_version": "Bad Alias!"}, 422, "model_version"),
    ]
    for body, status, needle in cases:
        r = env["client"].post("/v1/recommend", json=body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["error"]["message"], (body, r.text)
    codes = {
        env["client"].post("/v1/recommend", json={"user_id": "u1", "as_of": d}).json()["error"]["code"]
        for d in (too_late, too_early)
    }
    assert codes == {"as_of_too_late", "as_of_too_early"}
    # The last accepted days on both sides are accepted.
    for d in (day + 90, day - 364):
        r = env["client"].post("/v1/recommend", json={"user_id": _busy_user(env), "as_of": date_of(d).isoformat()})
        assert r.status_code == 200, r.text


def test_default_as_of_today_or_snapshot() -> None:
    window = AsOfWindow(ref="purchase_history@v1", reference_day=20_088, earliest_day=19_724, latest_day=20_178)
    body = RecommendRequest(user_id="u1")
    snap = resolve_as_of(body, window, BasketSettings(basket_default_as_of="snapshot"))
    assert (snap.as_of_day, snap.stale_reason) == (20_088, None)
    today = resolve_as_of(body, window, BasketSettings(), today=date_of(20_100))
    assert (today.as_of_day, today.stale_reason) == (20_100, None)
    # Today far after a 2024 snapshot: the server's staleness, answered with a flagged fallback, not a 4xx.
    stale = resolve_as_of(body, window, BasketSettings(), today=date(2026, 11, 24))
    assert stale.stale_reason is not None and "stale features" in stale.stale_reason
    with pytest.raises(ApiError) as err:
        resolve_as_of(RecommendRequest(user_id="u1", as_of=date_of(20_179)), window, BasketSettings())
    assert (err.value.status, err.value.code) == (422, "as_of_too_late")


def test_a_batch_is_one_feature_read_and_one_onnx_call_answering_like_singles(env: dict[str, Any]) -> None:
    model: LoadedModel = env["model"]
    users = sorted(env["rows"], key=lambda u: -len(env["rows"][u][0]))[:3]
    day = _ref_day(env)
    jobs = [
        Job(RecommendRequest(user_id=users[0], k=5), day),
        Job(RecommendRequest(user_id=users[1], k=7), day - 40),
        Job(RecommendRequest(user_id="ghost", k=3), day),
        Job(RecommendRequest(user_id=users[2], k=4), day, stale_reason="stale features: test"),
        Job(RecommendRequest(user_id=users[0], k=2), day + 20),
    ]
    singles = [recommend_batch(model, env["features"], [j])[0] for j in jobs]
    calls = []
    real = model.session

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def run(self, *a: Any, **kw: Any) -> Any:
            calls.append(1)
            return real.run(*a, **kw)

    reads_before = env["stub"].reads
    model.session = Counting()
    try:
        batched = recommend_batch(model, env["features"], jobs)
    finally:
        model.session = real
    assert len(calls) == 1 and env["stub"].reads - reads_before == 1
    for one, many in zip(singles, batched, strict=True):
        assert not isinstance(many, Exception)
        assert one.model_dump(exclude={"items"}) == many.model_dump(exclude={"items"})  # type: ignore[union-attr]
        assert [i.item_id for i in one.items] == [i.item_id for i in many.items]  # type: ignore[union-attr]
        assert np.allclose([i.score for i in one.items], [i.score for i in many.items], atol=1e-4)  # type: ignore[union-attr]
    assert [len(b.items) for b in batched] == [5, 7, 3, 4, 2]  # type: ignore[union-attr]
    assert [b.fallback for b in batched] == [False, False, True, True, False]  # type: ignore[union-attr]


def test_store_outage_flags_every_answer(env: dict[str, Any]) -> None:
    env["stub"].fail = True
    try:
        r = env["client"].post("/v1/recommend", json={"user_id": _busy_user(env), "k": 3, "as_of": "2024-12-01"})
    finally:
        env["stub"].fail = False
    assert r.status_code == 200
    body = r.json()
    assert body["fallback"] is True and "feature store unavailable" in body["fallback_reason"]


def test_admin_load_needs_the_token_and_reports_the_as_of_range(env: dict[str, Any]) -> None:
    c = env["client"]
    assert c.post("/v1/admin/load", json={"model_version": "1"}).status_code == 401
    r = c.post("/v1/admin/load", json={"model_version": "1"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    day = _ref_day(env)
    assert r.json()["as_of_range"] == [date_of(day - 364).isoformat(), date_of(day + 90).isoformat()]
    assert set(r.json()["inputs"]) == {"purchase_days", "item_ids", "item_mask"}


def test_the_service_never_imports_feast_or_torch() -> None:
    import subprocess
    import sys

    from feature_store.config import REPO_ROOT

    code = (
        "import sys; import services.basket.app as a; a.build_app(); "
        "print(','.join(m for m in ('feast', 'torch', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the basket service imported {out.stdout.strip()}"
