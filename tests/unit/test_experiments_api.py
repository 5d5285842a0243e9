"""The experiments admin API through FastAPI's TestClient, on a SQLite store in a temp dir.

Target validation uses ``registry_target_validator`` over a small fake with the registry's
``resolve`` contract (and its error messages), so no ONNX artifacts are needed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from models.registry import ModelNotFound
from services.gateway.experiments import (
    Experiment,
    ExperimentCreate,
    ExperimentStore,
    Target,
    check_targets,
    registry_target_validator,
)
from services.gateway.experiments_api import experiments_router
from services.kit.app import create_app
from services.kit.settings import ServiceSettings

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "/v1/experiments"


MODELS: dict[str, tuple[list[int], dict[str, int]]] = {
    "seq-lte": ([1, 2], {"champion": 2, "challenger": 1}),
    "tifu": ([1], {"champion": 1}),
    "ctr-ssr": ([1], {"champion": 1}),
}
FAMILIES = {"seq-lte": "sequential", "tifu": "basket", "ctr-ssr": "ctr"}


class FakeRegistry:
    """``resolve(name, ref)`` as ModelRegistry does it: versions, aliases, and the same messages."""

    models = MODELS

    def resolve(self, name: str, ref: str | int) -> object:
        if name not in self.models:
            raise ModelNotFound(f"unknown model {name!r}; registered models: {', '.join(sorted(self.models))}")
        versions, aliases = self.models[name]
        text = str(ref).lstrip("v")
        version = int(text) if text.isdigit() else aliases.get(str(ref))
        if version not in versions:
            shown = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items()))
            raise ModelNotFound(
                f"unknown alias or version {ref!r} of model {name!r}; "
                f"versions: {', '.join(f'v{v}' for v in versions)}; aliases: {shown}"
            )
        return SimpleNamespace(manifest=SimpleNamespace(family=FAMILIES[name], version=version))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ExperimentStore]:
    s = ExperimentStore(url=f"sqlite:///{tmp_path / 'gateway.db'}")
    yield s
    s.close()


@pytest.fixture
def client(store: ExperimentStore) -> TestClient:
    validator = registry_target_validator(FakeRegistry(), services={"sequential", "basket"})
    router = experiments_router(store, ServiceSettings(admin_token=TOKEN), validator)
    return TestClient(create_app("gateway-test", [router]), raise_server_exceptions=False)


def body(key: str = "exp1", **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": key,
        "surface": "home",
        "variants": [
            {
                "key": "control",
                "weight": 0.5,
                "target": {"service": "sequential", "model": "seq-lte", "ref": "champion"},
            },
            {"key": "treatment", "weight": 0.5, "target": {"service": "sequential", "model": "seq-lte", "ref": "v1"}},
        ],
    }
    data.update(kw)
    return data


def error(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    return str(err["message"])


# --- auth ----------------------------------------------------------------------------------------------

ROUTES = [
    ("POST", BASE, body()),
    ("POST", BASE + "/", body()),
    ("GET", BASE, None),
    ("GET", BASE + "/exp1", None),
    ("PATCH", BASE + "/exp1", {"version": 1, "coverage": 0.5}),
    ("POST", BASE + "/exp1/pause", None),
    ("POST", BASE + "/exp1/resume", None),
    ("POST", BASE + "/exp1/stop", None),
    ("GET", BASE + "/exp1/history", None),
]


@pytest.mark.parametrize(("method", "path", "payload"), ROUTES)
def test_every_route_needs_the_admin_token(client: TestClient, method: str, path: str, payload: Any) -> None:
    error(client.request(method, path, json=payload), 401, "unauthorized")
    error(client.request(method, path, json=payload, headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
    error(client.request(method, path, json=payload, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    # Auth is checked before the body: an invalid body without a token is still a 401.
    error(client.request(method, path, json={"junk": 1}), 401, "unauthorized")


def test_no_configured_token_means_closed(store: ExperimentStore) -> None:
    c = TestClient(create_app("t", [experiments_router(store, ServiceSettings(admin_token=None), None)]))
    error(c.get(BASE, headers=AUTH), 403, "forbidden")


# --- happy path --------------------------------------------------------------------------------------------


def test_create_get_list_update_lifecycle_history(client: TestClient) -> None:
    r = client.post(BASE, json=body(description="ranker test"), headers={**AUTH, "X-Actor": "alice"})
    assert r.status_code == 201, r.text
    exp = r.json()
    assert (exp["key"], exp["status"], exp["version"], exp["seed"], exp["control"]) == (
        "exp1",
        "draft",
        1,
        "exp1",
        "control",
    )
    assert client.get(BASE + "/exp1", headers=AUTH).json() == exp
    client.post(BASE + "/", json=body("exp2", surface="pdp", status="running"), headers=AUTH).raise_for_status()

    listed = client.get(BASE, headers=AUTH).json()["experiments"]
    assert [e["key"] for e in listed] == ["exp1", "exp2"]
    assert [e["key"] for e in client.get(BASE, params={"surface": "pdp"}, headers=AUTH).json()["experiments"]] == [
        "exp2"
    ]
    assert [e["key"] for e in client.get(BASE, params={"status": "draft"}, headers=AUTH).json()["experiments"]] == [
        "exp1"
    ]
    error(client.get(BASE, params={"status": "bogus"}, headers=AUTH), 422, "invalid_request")

    r = client.patch(BASE + "/exp1", json={"version": 1, "coverage": 0.25, "reason": "ramp"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["coverage"] == 0.25 and r.json()["version"] == 2
    assert client.post(BASE + "/exp1/resume", headers={**AUTH, "X-Actor": "bob"}).json()["status"] == "running"
    r = client.post(BASE + "/exp1/pause", json={"version": 3, "reason": "alert"}, headers=AUTH)
    assert r.json()["status"] == "paused"
    assert client.post(BASE + "/exp1/stop", json={}, headers=AUTH).json()["status"] == "stopped"

    hist = client.get(BASE + "/exp1/history", headers=AUTH).json()
    assert hist["key"] == "exp1"
    assert [(e["action"], e["actor"], e["reason"]) for e in hist["events"]] == [
        ("stop", "admin", ""),
        ("pause", "admin", "alert"),
        ("resume", "bob", ""),
        ("update", "admin", "ramp"),
        ("create", "alice", ""),
    ]
    assert hist["events"][-1]["before"] is None and hist["events"][3]["after"]["coverage"] == 0.25


# --- validation: one test per rule, each with its message --------------------------------------------------


def test_weights_must_sum_to_one(client: TestClient) -> None:
    b = body()
    b["variants"][1]["weight"] = 0.4
    msg = error(client.post(BASE, json=b, headers=AUTH), 422, "invalid_request")
    assert "weights of serving variants must sum to 1 (±1e-06); got 0.9: control=0.5, treatment=0.4" in msg
    b["variants"][1]["weight"] = 0.5 + 1e-7  # within tolerance
    assert client.post(BASE, json=b, headers=AUTH).status_code == 201


def test_duplicate_experiment_key_is_409(client: TestClient) -> None:
    client.post(BASE, json=body(), headers=AUTH).raise_for_status()
    msg = error(client.post(BASE, json=body(), headers=AUTH), 409, "experiment_exists")
    assert msg == "experiment 'exp1' already exists"


def test_duplicate_variant_keys(client: TestClient) -> None:
    b = body()
    b["variants"][1]["key"] = "control"
    assert "duplicate variant keys: control" in error(client.post(BASE, json=b, headers=AUTH), 422, "invalid_request")


def test_unknown_models_and_versions_are_named(client: TestClient) -> None:
    b = body()
    b["variants"][0]["target"]["model"] = "nope"
    b["variants"][1]["target"]["ref"] = "v9"
    r = client.post(BASE, json=b, headers=AUTH)
    msg = error(r, 422, "unknown_model_target")
    assert "variant 'control' (nope@champion): unknown model 'nope'; registered models: ctr-ssr, seq-lte, tifu" in msg
    assert (
        "variant 'treatment' (seq-lte@v9): unknown alias or version 'v9' of model 'seq-lte'; versions: v1, v2; "
        "aliases: challenger->v1, champion->v2" in msg
    )
    assert [d["variant"] for d in r.json()["error"]["details"]] == ["control", "treatment"]
    b = body()
    b["variants"][1]["target"]["service"] = "ghost"
    assert "unknown service 'ghost'; known services: basket, sequential" in error(
        client.post(BASE, json=b, headers=AUTH), 422, "unknown_model_target"
    )
    # Updates that change variants are checked too.
    client.post(BASE, json=body(), headers=AUTH).raise_for_status()
    variants = body()["variants"]
    variants[1]["target"]["ref"] = "staging"
    msg = error(
        client.patch(BASE + "/exp1", json={"version": 1, "variants": variants}, headers=AUTH),
        422,
        "unknown_model_target",
    )
    assert "unknown alias or version 'staging'" in msg


def test_namespace_overlap_is_409_naming_the_other(client: TestClient) -> None:
    ns = {"name": "home-rank", "start": 0.0, "end": 0.5}
    client.post(BASE, json=body("a", status="running", namespace=ns), headers=AUTH).raise_for_status()
    r = client.post(BASE, json=body("b", status="running", namespace={**ns, "start": 0.3, "end": 0.8}), headers=AUTH)
    msg = error(r, 409, "experiment_conflict")
    assert msg == (
        "namespace range home-rank [0.3, 0.8) of 'b' overlaps experiment 'a' (running) which holds home-rank [0, 0.5)"
    )
    assert r.json()["error"]["details"]["other"] == "a"
    ok = client.post(BASE, json=body("b", status="running", namespace={**ns, "start": 0.5, "end": 1.0}), headers=AUTH)
    assert ok.status_code == 201


def test_one_live_experiment_per_surface(client: TestClient) -> None:
    client.post(BASE, json=body("a", status="running"), headers=AUTH).raise_for_status()
    client.post(BASE, json=body("b"), headers=AUTH).raise_for_status()  # drafts may wait
    msg = error(client.post(BASE + "/b/resume", headers=AUTH), 409, "experiment_conflict")
    assert "surface 'home' already has live experiment 'a' (running, namespace none)" in msg


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"coverage": 1.5}, "coverage: Input should be less than or equal to 1"),
        ({"coverage": -0.1}, "coverage: Input should be greater than or equal to 0"),
        ({"namespace": {"name": "n", "start": 0.6, "end": 0.2}}, "namespace start must be < end, got [0.6, 0.2)"),
        ({"control": "ghost"}, "control 'ghost' is not a variant; variants: control, treatment"),
        ({"condition": {"country": {"$inn": ["US"]}}}, "condition.country.$inn: unknown operator"),
        ({"key": "Bad Key"}, "key: String should match pattern"),
        ({"variants": body()["variants"][:1]}, "variants: Tuple should have at least 2 items"),
        ({"weights": [0.5, 0.5]}, "weights: Extra inputs are not permitted"),
    ],
)
def test_invalid_definitions_are_422_with_a_message(client: TestClient, change: dict[str, Any], needle: str) -> None:
    assert needle in error(client.post(BASE, json=body(**change), headers=AUTH), 422, "invalid_request")


def test_shadow_variants_take_no_share(client: TestClient) -> None:
    b = body()
    b["variants"].append(
        {"key": "shadow", "weight": 0.2, "shadow": True, "target": {"service": "basket", "model": "tifu", "ref": "v1"}}
    )
    msg = error(client.post(BASE, json=b, headers=AUTH), 422, "invalid_request")
    assert "their weight must be 0 (shadow=0.2)" in msg
    b["variants"][2]["weight"] = 0
    assert client.post(BASE, json=b, headers=AUTH).status_code == 201


# --- update errors ----------------------------------------------------------------------------------------


def test_update_errors(client: TestClient) -> None:
    client.post(BASE, json=body(), headers=AUTH).raise_for_status()
    r = client.patch(BASE + "/exp1", json={"version": 7, "coverage": 0.5}, headers=AUTH)
    assert "is at version 1, not 7" in error(r, 409, "version_conflict")
    assert r.json()["error"]["details"] == {"expected": 7, "current": 1}
    error(client.patch(BASE + "/exp1", json={"coverage": 0.5}, headers=AUTH), 422, "invalid_request")  # no version
    msg = error(
        client.patch(BASE + "/exp1", json={"version": 1, "status": "running"}, headers=AUTH), 422, "invalid_experiment"
    )
    assert "status changes go through /pause, /resume and /stop" in msg
    r = client.patch(BASE + "/exp1", json={"version": 1, "coverage": 2}, headers=AUTH)
    assert "coverage: Input should be less than or equal to 1" in error(r, 422, "invalid_experiment")
    r = client.patch(BASE + "/exp1", json={"version": 1, "variants": body()["variants"][:1] * 2}, headers=AUTH)
    assert "duplicate variant keys: control" in error(r, 422, "invalid_experiment")
    assert "unknown experiment 'ghost'; experiments: exp1" in error(
        client.patch(BASE + "/ghost", json={"version": 1}, headers=AUTH), 404, "experiment_not_found"
    )
    error(client.get(BASE + "/ghost", headers=AUTH), 404, "experiment_not_found")
    error(client.get(BASE + "/ghost/history", headers=AUTH), 404, "experiment_not_found")
    msg = error(client.post(BASE + "/exp1/pause", headers=AUTH), 409, "invalid_transition")
    assert msg == "cannot pause experiment 'exp1': it is draft (pause needs running)"
    error(client.post(BASE + "/exp1/stop", json={"version": 5}, headers=AUTH), 409, "version_conflict")
    error(client.post(BASE + "/exp1/stop", json={"bogus": 1}, headers=AUTH), 422, "invalid_request")
    error(client.post(BASE, json=body("x"), headers={**AUTH, "X-Actor": "a" * 200}), 422, "invalid_request")


# --- the model and validator without HTTP --------------------------------------------------------------------


def test_check_targets_and_model_defaults() -> None:
    spec = ExperimentCreate.model_validate(body())
    check_targets(spec, registry_target_validator(FakeRegistry()))  # all exist: no error
    check_targets(spec, None)  # no validator configured: nothing checked
    validate = registry_target_validator(FakeRegistry())
    with pytest.raises(ValueError, match="registered models: ctr-ssr, seq-lte, tifu"):
        validate(Target(service="sequential", model="x", ref="champion"))
    exp = Experiment.model_validate({**body(seed="custom"), "status": "running"})
    assert exp.seed == "custom" and exp.control == "control" and exp.serving == list(exp.variants)


def test_default_validator_against_a_real_empty_registry(tmp_path: Path) -> None:
    from feature_store.versions import VersionCatalog
    from models.registry import ModelRegistry

    with ModelRegistry(
        url=f"sqlite:///{tmp_path / 'r.db'}", data_dir=tmp_path, catalog=VersionCatalog(tmp_path / "c")
    ) as reg:
        validate = registry_target_validator(reg)
        with pytest.raises(ValueError, match="unknown model 'seq-lte'; registered models: none"):
            validate(Target(service="sequential", model="seq-lte", ref="champion"))


def test_two_stage_targets_pair_a_candidate_source_with_a_ranker() -> None:
    validate = registry_target_validator(FakeRegistry(), services={"sequential", "ctr"})
    ranker = {"service": "ctr", "model": "ctr-ssr", "ref": "champion", "candidates": 50}
    validate(Target(service="sequential", model="seq-lte", ref="champion", rerank=ranker))  # a proper pipeline
    with pytest.raises(ValueError, match="a first stage must produce candidates"):
        validate(Target(service="ctr", model="ctr-ssr", ref="champion"))
    with pytest.raises(ValueError, match="a re-ranking stage needs a ranker"):
        validate(
            Target(
                service="sequential",
                model="seq-lte",
                ref="champion",
                rerank={"service": "sequential", "model": "seq-lte", "ref": "v1"},
            )
        )
    with pytest.raises(ValueError, match="unknown alias or version 'v9' of model 'ctr-ssr'"):
        validate(Target(service="sequential", model="seq-lte", ref="champion", rerank={**ranker, "ref": "v9"}))
    with pytest.raises(ValidationError, match="candidates"):
        Target(service="sequential", model="seq-lte", ref="champion", rerank={**ranker, "candidates": 5000})
