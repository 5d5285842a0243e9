"""The model registry against real databases: every test runs on SQLite and on PostgreSQL.

PostgreSQL: a private database ``recsys_test_<random>`` on 127.0.0.1:5432 for the session,
one schema per test (fast, and no test sees another's rows), dropped at the end.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from feature_store.retention import FeatureVersionPinned, check_deletable
from feature_store.versions import FeatureVersion, VersionCatalog, VersionStatus
from models.registry import (
    AliasError,
    ArtifactTampered,
    ModelNotFound,
    ModelRegistry,
    RegistrationError,
)
from models.registry.manifest import MANIFEST_FILE
from models.registry.pins import registry_pins
from tests.conftest import make_settings, private_postgres_database, private_schema_url
from tests.unit.test_registry_artifacts import DIM, N_ITEMS, TOP_K, make_artifact, make_features

TRAINING = {
    "dataset": "synthetic",
    "data_id": "synthetic-2024-03-01",
    "start": "2023-03-01T00:00:00Z",
    "end": "2024-03-01T00:00:00Z",
}


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A private PostgreSQL database for this session; dropped (forcibly) at the end."""
    with private_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return private_schema_url(request.getfixturevalue("pg_database"))


@pytest.fixture(scope="module")
def feature_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, FeatureVersion]]:
    """Feature versions written once per module; tests only read the catalog."""
    data_dir = tmp_path_factory.mktemp("features")
    return data_dir, make_features(make_settings(data_dir))


@pytest.fixture
def registry(db_url: str, tmp_path: Path, feature_env) -> Iterator[ModelRegistry]:
    features_dir, _ = feature_env
    reg = ModelRegistry(url=db_url, data_dir=tmp_path / "data", catalog=VersionCatalog(features_dir / "catalog"))
    yield reg
    reg.close()


def register(reg: ModelRegistry, art: Path, name: str = "seq-lte", **kw) -> object:
    args = dict(
        family="sequential",
        name=name,
        artifact_dir=art,
        feature_refs=["lte_avg@v1", "recent_items@v1"],
        training=TRAINING,
        metrics={"ndcg@10": 0.31, "recall@10": 0.42},
        params={"variant": "avg", "top_k": TOP_K, "max_len": 50, "lte_dim": DIM},
        description="test model",
    )
    args.update(kw)
    return reg.register(**args)


# --- registration ------------------------------------------------------------------------------------


def test_register_copies_hashes_and_records_everything(registry: ModelRegistry, tmp_path: Path, feature_env) -> None:
    _, features = feature_env
    art = make_artifact(tmp_path / "art", extra={"params.json": "{}"})
    m = register(registry, art)
    assert (m.name, m.version, m.family) == ("seq-lte", 1, "sequential")
    mv = registry.get("seq-lte", 1)
    assert mv.path == registry.data_dir / "models" / "seq-lte" / "v1"
    assert mv.onnx_path.read_bytes() == (art / "model.onnx").read_bytes()
    assert sorted(m.files) == ["item_index.json", "model.onnx", "params.json"]
    import hashlib

    assert (
        m.onnx_sha256 == m.files["model.onnx"].sha256 == hashlib.sha256((art / "model.onnx").read_bytes()).hexdigest()
    )
    assert m.onnx_data_files == ()
    assert [(t.name, t.dtype, t.shape) for t in m.inputs] == [
        ("item_seq", "int64", ("batch", "seq_len")),
        ("lte", "float32", ("batch", DIM)),
        ("exclude", "bool", ("batch", N_ITEMS + 1)),
    ]
    assert [(t.name, t.dtype, t.shape) for t in m.outputs] == [
        ("scores", "float32", ("batch", TOP_K)),
        ("items", "int64", ("batch", TOP_K)),
    ]
    lte = features["lte_avg@v1"]
    assert [p.model_dump() for p in m.feature_refs] == [
        {"ref": "lte_avg@v1", "schema_hash": lte.schema_hash, "basis_fingerprint": "fp-test-basis"},
        {
            "ref": "recent_items@v1",
            "schema_hash": features["recent_items@v1"].schema_hash,
            "basis_fingerprint": None,
        },
    ]
    assert m.training.dataset == "synthetic" and m.training.data_id == "synthetic-2024-03-01"
    assert m.training.start is not None and m.training.start.year == 2023
    assert m.metrics == {"ndcg@10": 0.31, "recall@10": 0.42}
    assert m.params["lte_dim"] == DIM
    assert len(m.git_sha) == 40 or m.git_sha == "unknown"
    # The database copy and the on-disk copy are the same manifest; files are read-only.
    assert registry.versions("seq-lte") == [m]
    assert mv.manifest == m
    assert (mv.path / MANIFEST_FILE).is_file()
    assert all((mv.path / f).stat().st_mode & 0o777 == 0o444 for f in m.files)
    assert mv.path.stat().st_mode & 0o777 == 0o555
    assert not any(p.name.startswith(".staging") for p in mv.path.parent.iterdir())
    # What a service does: load it and run it.
    import numpy as np

    scores, items = mv.load_session().run(
        ["scores", "items"],
        {
            "item_seq": np.array([[1, 2, 3]], dtype=np.int64),
            "lte": np.zeros((1, DIM), dtype=np.float32),
            "exclude": np.zeros((1, N_ITEMS + 1), dtype=bool),
        },
    )
    assert scores.shape == items.shape == (1, TOP_K)


def test_versions_are_monotonic_per_name(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    assert [register(registry, art).version for _ in range(3)] == [1, 2, 3]
    assert register(registry, art, name="other").version == 1
    assert registry.names() == ["other", "seq-lte"]
    assert [m.version for m in registry.versions("seq-lte")] == [1, 2, 3]
    assert registry.versions("nobody") == []


def test_concurrent_registration_gets_distinct_versions(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    n = 6
    barrier = threading.Barrier(n)
    got: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            got.append(register(registry, art).version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == list(range(1, n + 1))
    for v in got:
        registry.verify("seq-lte", v)  # every version's files are its own, complete
    assert sorted(p.name for p in (registry.data_dir / "models" / "seq-lte").iterdir()) == sorted(f"v{v}" for v in got)


def test_concurrent_registration_from_two_registries(registry: ModelRegistry, tmp_path: Path) -> None:
    """Two processes (here: two engines) registering the same name at once still get distinct numbers."""
    other = ModelRegistry(url=registry.url, data_dir=registry.data_dir, catalog=registry.catalog)
    art = make_artifact(tmp_path / "art")
    barrier = threading.Barrier(2)
    got: list[int] = []

    def worker(reg: ModelRegistry) -> None:
        barrier.wait()
        for _ in range(2):
            got.append(register(reg, art).version)

    threads = [threading.Thread(target=worker, args=(r,)) for r in (registry, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert sorted(got) == [1, 2, 3, 4]


def test_external_weights_are_shipped_hashed_and_loaded(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", external=True)
    m = register(registry, art)
    assert m.onnx_data_files == ("model.onnx.data",)
    assert sorted(m.files) == ["item_index.json", "model.onnx", "model.onnx.data"]
    mv = registry.resolve("seq-lte", "latest")
    assert (mv.path / "model.onnx.data").read_bytes() == (art / "model.onnx.data").read_bytes()
    assert [o.name for o in mv.load_session().get_outputs()] == ["scores", "items"]
    os.chmod(mv.path, 0o755)
    (mv.path / "model.onnx.data").chmod(0o644)
    with open(mv.path / "model.onnx.data", "r+b") as fh:
        fh.write(b"\x00\x00\x00\x01")
    with pytest.raises(ArtifactTampered, match=r"model\.onnx\.data sha256 differs"):
        registry.verify("seq-lte", 1)


# --- refusals ----------------------------------------------------------------------------------------


def _refused(registry: ModelRegistry, match: str, art: Path, **kw) -> RegistrationError:
    with pytest.raises(RegistrationError, match=match) as exc:
        register(registry, art, **kw)
    assert isinstance(exc.value, ValueError)
    # Nothing was stored: no row, no version dir, no staging leftovers.
    assert registry.versions(kw.get("name", "seq-lte")) == []
    d = registry.data_dir / "models" / kw.get("name", "seq-lte")
    assert not d.exists() or list(d.iterdir()) == []
    return exc.value


def test_refuses_unknown_family(registry: ModelRegistry, tmp_path: Path) -> None:
    _refused(
        registry,
        r"unknown model family 'music'; known families: basket, ctr, sequential",
        make_artifact(tmp_path),
        family="music",
    )


def test_refuses_graph_that_does_not_load(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    (art / "model.onnx").write_bytes(b"\x08\x07garbage")
    exc = _refused(registry, r"model.onnx does not load in onnxruntime: ", art)
    assert "ONNXRuntimeError" in str(exc) or "INVALID" in str(exc)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"exclude": False}, r"input 'exclude' \(bool, rank 2\) is missing"),
        ({"items_dtype": 1}, r"output 'items' has dtype float32, expected int64"),
        ({"lte_rank": 1}, r"input 'lte' has rank 1 \[4\], expected rank 2"),
    ],
)
def test_refuses_signature_that_breaks_the_contract(registry: ModelRegistry, tmp_path: Path, kw, match) -> None:
    exc = _refused(registry, "does not match the 'sequential' contract: " + match, make_artifact(tmp_path, **kw))
    assert "The graph has inputs: item_seq int64 [batch, seq_len]" in str(exc)
    assert f"outputs: scores float32 [batch, {TOP_K}]" in str(exc)


def test_refuses_missing_required_files(registry: ModelRegistry, tmp_path: Path) -> None:
    _refused(registry, r"required file missing: item_index.json", make_artifact(tmp_path / "a", item_index=False))
    art = make_artifact(tmp_path / "b")
    (art / "model.onnx").unlink()
    _refused(registry, r"required file missing: no ONNX graph \(model.onnx\)", art)
    art = make_artifact(tmp_path / "c", external=True)
    (art / "model.onnx.data").unlink()
    _refused(registry, r"required file missing: model.onnx.data \(external weights referenced by model.onnx\)", art)
    _refused(registry, r"artifact directory .* does not exist", tmp_path / "nowhere")


def test_refuses_unknown_feature_version_listing_available(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    _refused(
        registry,
        r"cannot pin feature 'lte_avg@v9': unknown feature version lte_avg@v9; available: lte_avg@v1, lte_avg@v2",
        art,
        feature_refs=["lte_avg@v9"],
    )
    _refused(registry, r"unknown feature version view 'nope'|nope@v1; available: none", art, feature_refs=["nope@v1"])
    _refused(registry, r"bad feature ref 'lte_avg'", art, feature_refs=["lte_avg"])


def test_refuses_bad_name_and_bad_metadata(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    _refused(registry, r"model name 'Seq LTE' must match", art, name="Seq LTE")
    _refused(registry, r"metrics must be finite numbers; bad: ndcg", art, metrics={"ndcg": float("nan")})
    _refused(registry, r"bad training info", art, training={"data_id": "x"})
    _refused(registry, r"training window starts after it ends", art, training={**TRAINING, "start": "2025-01-01"})


def test_refuses_retired_feature_version(registry: ModelRegistry, tmp_path: Path, feature_env) -> None:
    features_dir, _ = feature_env
    catalog = VersionCatalog(features_dir / "catalog")
    catalog.set_status("lte_avg", 2, VersionStatus(state="retired"))
    try:
        _refused(
            registry,
            r"cannot pin feature lte_avg@v2: it is retired",
            make_artifact(tmp_path),
            feature_refs=["lte_avg@v2"],
        )
    finally:
        catalog.set_status("lte_avg", 2, VersionStatus(state="offline"))


# --- aliases -----------------------------------------------------------------------------------------


def test_aliases_history_and_persistence(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    for _ in range(3):
        register(registry, art)
    e1 = registry.set_alias("seq-lte", "champion", 1, actor="alice", reason="first")
    assert (e1.from_version, e1.to_version, e1.actor, e1.reason) == (None, 1, "alice", "first")
    registry.set_alias("seq-lte", "challenger", "v3", actor="bob")
    e3 = registry.set_alias("seq-lte", "champion", "challenger", actor="bob", reason="won the A/B")
    assert (e3.from_version, e3.to_version) == (1, 3)
    registry.set_alias("seq-lte", "champion", 2, actor="carol", reason="rollback")
    deleted = registry.delete_alias("seq-lte", "challenger", actor="carol", reason="experiment over")
    assert (deleted.from_version, deleted.to_version) == (3, None)
    assert registry.aliases("seq-lte") == {"champion": 2}

    with pytest.raises(ModelNotFound, match=r"unknown version v7 of model 'seq-lte'; versions: v1, v2, v3"):
        registry.set_alias("seq-lte", "champion", 7)
    with pytest.raises(ModelNotFound, match=r"unknown model 'ghost'; registered models: seq-lte"):
        registry.set_alias("ghost", "champion", 1)
    with pytest.raises(AliasError, match="has no alias 'challenger'; its aliases: champion"):
        registry.delete_alias("seq-lte", "challenger")
    for bad in ("Champion", "latest", "v2", "2x", "a b"):
        with pytest.raises(AliasError, match="must match"):
            registry.set_alias("seq-lte", bad, 1)

    # A fresh registry on the same database sees the same state and history, newest first.
    again = ModelRegistry(url=registry.url, data_dir=registry.data_dir, catalog=registry.catalog)
    assert again.aliases("seq-lte") == {"champion": 2}
    history = again.alias_history("seq-lte")
    assert [(e.alias, e.from_version, e.to_version, e.actor) for e in history] == [
        ("challenger", 3, None, "carol"),
        ("champion", 3, 2, "carol"),
        ("champion", 1, 3, "bob"),
        ("challenger", None, 3, "bob"),
        ("champion", None, 1, "alice"),
    ]
    assert [e.reason for e in again.alias_history("seq-lte", "champion")] == ["rollback", "won the A/B", "first"]
    assert all(e.at.tzinfo is not None for e in history)
    assert again.resolve("seq-lte", "champion").version == 2
    again.close()


def test_alias_history_is_append_only_in_the_database(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, make_artifact(tmp_path))
    registry.set_alias("seq-lte", "champion", 1)
    for sql in (
        "UPDATE alias_events SET actor = 'mallory'",
        "DELETE FROM alias_events",
        "UPDATE model_versions SET version = 9",
    ):
        with pytest.raises(sa.exc.DBAPIError, match=r"append-only|immutable"), registry.engine.begin() as conn:
            conn.exec_driver_sql(sql)
    assert [e.actor for e in registry.alias_history("seq-lte")] == ["cli"]


def test_concurrent_alias_moves_record_a_consistent_chain(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    for _ in range(3):
        register(registry, art)
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(3):
            registry.set_alias("seq-lte", "champion", (i + j) % 3 + 1, actor=f"w{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chain = list(reversed(registry.alias_history("seq-lte", "champion")))
    assert len(chain) == 12 and chain[0].from_version is None
    # Each event's from_version is exactly the previous event's to_version: no lost update.
    assert all(b.from_version == a.to_version for a, b in itertools.pairwise(chain))
    assert registry.aliases("seq-lte")["champion"] == chain[-1].to_version


def test_resolve_forms(registry: ModelRegistry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    register(registry, art)
    register(registry, art)
    registry.set_alias("seq-lte", "champion", 1)
    for ref, want in [(1, 1), ("1", 1), ("v2", 2), (" v1 ", 1), ("latest", 2), ("champion", 1)]:
        mv = registry.resolve("seq-lte", ref)
        assert mv.version == want, ref
        assert mv.onnx_path == registry.data_dir / "models" / "seq-lte" / f"v{want}" / "model.onnx"
    with pytest.raises(
        ModelNotFound, match=r"unknown alias or version 'staging'.*versions: v1, v2; aliases: champion->v1"
    ):
        registry.resolve("seq-lte", "staging")
    with pytest.raises(ModelNotFound, match="unknown version v5"):
        registry.resolve("seq-lte", "v5")
    with pytest.raises(LookupError, match="unknown model 'ghost'"):
        registry.resolve("ghost", "latest")


# --- pins and integrity ------------------------------------------------------------------------------


def test_pinned_by_and_retention_guard(registry: ModelRegistry, tmp_path: Path, feature_env, monkeypatch) -> None:
    art = make_artifact(tmp_path)
    register(registry, art)  # seq-lte@v1: lte_avg@v1 + recent_items@v1
    register(registry, art, feature_refs=["lte_avg@v2:lte", "lte_avg@v2"])  # seq-lte@v2, pinned once
    register(registry, art, name="base", feature_refs=["recent_items@v1"])
    assert registry.pinned_by("lte_avg@v1") == ["seq-lte@v1"]
    assert registry.pinned_by("lte_avg@v2") == ["seq-lte@v2"]
    assert registry.pinned_by("lte_avg@v2:lte") == ["seq-lte@v2"]
    assert registry.pinned_by("recent_items@v1") == ["base@v1", "seq-lte@v1"]
    assert registry.pinned_by("recent_items@v2") == []
    assert registry.pinned_by("not a ref") == []
    assert [p.ref for p in registry.get("seq-lte", 2).manifest.feature_refs] == ["lte_avg@v2"]
    with pytest.raises(
        FeatureVersionPinned, match=r"cannot delete lte_avg@v1: it is pinned by 1 model version\(s\): seq-lte@v1"
    ):
        check_deletable("lte_avg@v1", registry)
    # registry_pins() builds the same registry from the environment, as `recsys features retire` does.
    monkeypatch.setenv("RECSYS_DATA_DIR", str(registry.data_dir))
    monkeypatch.setenv("RECSYS_REGISTRY_URL", registry.url)
    pins = registry_pins()
    assert pins.pinned_by("recent_items@v1") == ["base@v1", "seq-lte@v1"]
    pins.close()  # type: ignore[attr-defined]


def test_verify_detects_tampering(registry: ModelRegistry, tmp_path: Path) -> None:
    register(registry, make_artifact(tmp_path))
    registry.verify("seq-lte", 1)
    mv = registry.get("seq-lte", 1)
    mv.path.chmod(0o755)
    (mv.path / "item_index.json").chmod(0o644)
    (mv.path / "item_index.json").write_text('["", "evil"]')
    with pytest.raises(
        ArtifactTampered, match=r"seq-lte@v1 does not match its manifest: item_index.json has \d+ bytes"
    ):
        registry.verify("seq-lte", 1)
    with pytest.raises(ArtifactTampered):
        mv.load_session()  # loading verifies by default
    with pytest.raises(ModelNotFound):
        registry.verify("seq-lte", 2)


@pytest.mark.parametrize("ref", [2**31, "99999999999999999999", "v0", 0])
def test_out_of_range_version_numbers_are_not_found_not_a_database_error(
    registry: ModelRegistry, tmp_path: Path, ref
) -> None:
    # Both databases store versions in a 32-bit INTEGER: the lookup must not reach them with a bigger number.
    register(registry, make_artifact(tmp_path))
    with pytest.raises(ModelNotFound, match=r"unknown version v\d+ of model 'seq-lte'; versions: v1"):
        registry.resolve("seq-lte", ref)
