"""The experiments store against real databases: every test runs on SQLite and on PostgreSQL.

PostgreSQL: a private database ``recsys_test_<random>`` on 127.0.0.1:5432 for the session (dropped at
the end), one schema per test so no test sees another's rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.gateway.assignment import assign
from services.gateway.experiments import (
    ExperimentCache,
    ExperimentConflict,
    ExperimentCreate,
    ExperimentError,
    ExperimentExists,
    ExperimentNotFound,
    ExperimentStore,
    InvalidExperiment,
    InvalidTransition,
    VersionConflict,
    assign_sticky,
)
from tests.conftest import private_postgres_database, private_schema_url

STICKY_USERS = [f"user-{i}" for i in range(120)]


@pytest.fixture(scope="session")
def gateway_pg_database() -> Iterator[str]:
    """A private PostgreSQL database for this session; dropped (forcibly) at the end."""
    with private_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    return private_schema_url(request.getfixturevalue("gateway_pg_database"))


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[[], ExperimentStore]]:
    """Opens stores on the test's database (several = several replicas, or a restart); closes them all."""
    stores: list[ExperimentStore] = []

    def make() -> ExperimentStore:
        stores.append(ExperimentStore(url=db_url))
        return stores[-1]

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], ExperimentStore]) -> ExperimentStore:
    return open_store()


def spec(key: str = "exp1", surface: str = "home", status: str = "draft", **kw: Any) -> ExperimentCreate:
    data: dict[str, Any] = {
        "key": key,
        "surface": surface,
        "status": status,
        "variants": [
            {"key": "control", "weight": 0.5, "target": {"service": "sequential", "model": "seq", "ref": "champion"}},
            {"key": "treatment", "weight": 0.5, "target": {"service": "sequential", "model": "seq", "ref": "v2"}},
        ],
    }
    data.update(kw)
    return ExperimentCreate.model_validate(data)


def ns(start: float, end: float, name: str = "home-rank") -> dict[str, Any]:
    return {"name": name, "start": start, "end": end}


# --- CRUD, history, persistence ------------------------------------------------------------------------


def test_crud_history_and_restart(open_store: Callable[[], ExperimentStore]) -> None:
    store = open_store()
    created = store.create(spec(description="first"), actor="alice", reason="launch prep")
    assert (created.version, created.status, created.seed, created.control) == (1, "draft", "exp1", "control")
    assert created.created_at is not None and created.created_at == created.updated_at
    assert store.get("exp1") == created

    updated = store.update("exp1", {"coverage": 0.5}, expected_version=1, actor="bob")
    assert (updated.version, updated.coverage, updated.created_at) == (2, 0.5, created.created_at)
    running = store.resume("exp1", actor="carol")
    paused = store.pause("exp1", actor="dave", expected_version=3, reason="incident")
    resumed = store.resume("exp1")
    stopped = store.stop("exp1", actor="erin")
    statuses = [e.status for e in (running, paused, resumed, stopped)]
    assert statuses == ["running", "paused", "running", "stopped"] and stopped.version == 6

    history = store.history("exp1")
    assert [(e.action, e.actor) for e in history] == [
        ("stop", "erin"),
        ("resume", "admin"),
        ("pause", "dave"),
        ("resume", "carol"),
        ("update", "bob"),
        ("create", "alice"),
    ]
    create_ev, update_ev = history[-1], history[-2]
    assert create_ev.before is None and create_ev.after is not None and create_ev.reason == "launch prep"
    assert update_ev.before["coverage"] == 1.0 and update_ev.after["coverage"] == 0.5  # type: ignore[index]
    assert history[2].reason == "incident" and history[0].at >= history[-1].at

    # A restart (a new store on the same database) sees everything.
    store.close()
    again = open_store()
    assert again.get("exp1") == stopped
    assert [e.id for e in again.history("exp1")] == [e.id for e in history]


def test_list_filters_and_running_for_surface(store: ExperimentStore) -> None:
    store.create(spec("a", surface="home", status="running"))
    store.create(spec("b", surface="home"))
    store.create(spec("c", surface="pdp", status="running"))
    assert [e.key for e in store.list()] == ["a", "b", "c"]
    assert [e.key for e in store.list(surface="home")] == ["a", "b"]
    assert [e.key for e in store.list(status="running")] == ["a", "c"]
    assert [e.key for e in store.list(surface="home", status="draft")] == ["b"]
    assert [e.key for e in store.running_for_surface("home")] == ["a"]
    assert store.running_for_surface("cart") == []


def test_unknown_and_duplicate_keys(store: ExperimentStore) -> None:
    store.create(spec("a"))
    with pytest.raises(ExperimentExists, match="'a' already exists"):
        store.create(spec("a"))
    for call in (
        lambda: store.get("nope"),
        lambda: store.history("nope"),
        lambda: store.pause("nope"),
        lambda: store.update("nope", {}, 1),
    ):
        with pytest.raises(ExperimentNotFound, match="unknown experiment 'nope'; experiments: a"):
            call()


def test_optimistic_concurrency(store: ExperimentStore) -> None:
    store.create(spec())
    store.update("exp1", {"coverage": 0.9}, expected_version=1)
    with pytest.raises(VersionConflict, match="at version 2, not 1") as err:
        store.update("exp1", {"coverage": 0.8}, expected_version=1)
    assert err.value.details == {"expected": 1, "current": 2}
    with pytest.raises(VersionConflict):
        store.pause("exp1", expected_version=7)
    # A no-op update neither bumps the version nor writes history.
    assert store.update("exp1", {"coverage": 0.9}, expected_version=2).version == 2
    assert len(store.history("exp1")) == 2


def test_concurrent_updates_exactly_one_wins(open_store: Callable[[], ExperimentStore]) -> None:
    replicas = [open_store() for _ in range(4)]
    replicas[0].create(spec())
    results: list[Any] = [None] * len(replicas)
    barrier = threading.Barrier(len(replicas))

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = replicas[i].update("exp1", {"coverage": 0.1 * (i + 1)}, expected_version=1, actor=f"r{i}")
        except ExperimentError as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1 and all(isinstance(r, VersionConflict) for r in results if r not in winners)
    assert replicas[0].get("exp1").version == 2


def test_concurrent_overlapping_starts_exactly_one_wins(open_store: Callable[[], ExperimentStore]) -> None:
    replicas = [open_store() for _ in range(3)]
    results: list[Any] = [None] * len(replicas)
    barrier = threading.Barrier(len(replicas))

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = replicas[i].create(spec(f"e{i}", status="running", namespace=ns(0.1 * i, 0.5 + 0.1 * i)))
        except ExperimentError as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, ExperimentConflict) for r in results if isinstance(r, Exception))


def test_lifecycle_transitions(store: ExperimentStore) -> None:
    store.create(spec())
    with pytest.raises(InvalidTransition, match="cannot pause experiment 'exp1': it is draft"):
        store.pause("exp1")
    store.resume("exp1")  # resuming a draft starts it
    with pytest.raises(InvalidTransition, match="it is running"):
        store.resume("exp1")
    store.stop("exp1")
    for call in (lambda: store.stop("exp1"), lambda: store.resume("exp1"), lambda: store.pause("exp1")):
        with pytest.raises(InvalidTransition, match="it is stopped"):
            call()
    with pytest.raises(InvalidTransition, match="stopped experiments are final"):
        store.update("exp1", {"coverage": 0.2}, expected_version=3)


def test_update_validation(store: ExperimentStore) -> None:
    store.create(spec(bucket_version=2))
    with pytest.raises(InvalidExperiment, match="fields that cannot be updated: key, status"):
        store.update("exp1", {"key": "x", "status": "running"}, 1)
    with pytest.raises(InvalidExperiment, match=r"weights of serving variants must sum to 1.*control=0.5, b=0.2"):
        store.update(
            "exp1",
            {
                "variants": [
                    spec().variants[0].model_dump(),
                    {**spec().variants[1].model_dump(), "key": "b", "weight": 0.2},
                ]
            },
            1,
        )
    with pytest.raises(InvalidExperiment, match="coverage: Input should be less than or equal to 1"):
        store.update("exp1", {"coverage": 1.5}, 1)
    with pytest.raises(InvalidExperiment, match=r"bucket_version can only increase \(current 2, got 1\)"):
        store.update("exp1", {"bucket_version": 1}, 1)
    assert store.update("exp1", {"bucket_version": 3}, 1).bucket_version == 3


# --- exclusivity ---------------------------------------------------------------------------------------


def test_namespace_overlap_is_refused_among_live_experiments(store: ExperimentStore) -> None:
    store.create(spec("a", status="running", namespace=ns(0.0, 0.5)))
    held = r"overlaps experiment 'a' \(running\) which holds home-rank \[0, 0.5\)"
    with pytest.raises(ExperimentConflict, match=held):
        store.create(spec("b", status="running", namespace=ns(0.4, 1.0)))
    # Disjoint ranges of one namespace may share a surface.
    store.create(spec("b", status="running", namespace=ns(0.5, 1.0)))
    # A draft may overlap (it is not live); starting it is refused until the range is free.
    store.create(spec("c", namespace=ns(0.2, 0.3)))
    with pytest.raises(ExperimentConflict) as err:
        store.resume("c")
    assert err.value.details["other"] == "a" and err.value.details["other_namespace"]["end"] == 0.5
    # A paused experiment keeps its range (so resuming it cannot collide) ...
    store.pause("a")
    with pytest.raises(ExperimentConflict):
        store.resume("c")
    # ... and stopping releases it.
    store.stop("a")
    assert store.resume("c").status == "running"
    # Moving a live range onto another's is refused too.
    with pytest.raises(ExperimentConflict, match="overlaps experiment 'b'"):
        store.update("c", {"namespace": ns(0.45, 0.55)}, store.get("c").version)
    # Namespaces are global: the same name on another surface still excludes.
    with pytest.raises(ExperimentConflict, match="overlaps experiment 'c'"):
        store.create(spec("d", surface="pdp", status="running", namespace=ns(0.25, 0.26)))


def test_one_live_experiment_per_surface_unless_namespaced(store: ExperimentStore) -> None:
    store.create(spec("a", status="running"))
    with pytest.raises(ExperimentConflict, match="surface 'home' already has live experiment 'a'"):
        store.create(spec("b", status="running", namespace=ns(0.0, 0.5)))
    store.create(spec("other-surface", surface="pdp", status="running"))  # other surfaces are independent
    store.stop("a")
    store.create(spec("b", status="running", namespace=ns(0.0, 0.5)))
    # Different namespace names do not separate users: refused.
    with pytest.raises(ExperimentConflict, match=r"namespace home-rank \[0, 0.5\)"):
        store.create(spec("c", status="running", namespace=ns(0.5, 1.0, name="other-ns")))


# --- change token and the replicas' cache -----------------------------------------------------------------


def test_change_token_moves_on_every_write(store: ExperimentStore) -> None:
    tokens = [store.change_token()]
    store.create(spec())
    tokens.append(store.change_token())
    store.update("exp1", {"coverage": 0.3}, 1)
    tokens.append(store.change_token())
    store.resume("exp1")
    tokens.append(store.change_token())
    assert len(set(tokens)) == 4
    assert store.change_token() == tokens[-1]  # stable without writes


def test_cache_sees_another_replicas_change_within_the_poll_interval(
    open_store: Callable[[], ExperimentStore],
) -> None:
    admin, replica = open_store(), open_store()
    now = [0.0]
    cache = ExperimentCache(replica, interval_s=0.25, clock=lambda: now[0])
    assert cache.running_for_surface("home") == ()
    admin.create(spec(status="running"))
    now[0] = 0.1
    assert cache.running_for_surface("home") == ()  # not yet due: no query at all
    now[0] = 0.3
    assert [e.key for e in cache.running_for_surface("home")] == ["exp1"]
    reloads = cache.reloads
    now[0] = 0.6
    cache.snapshot()
    assert cache.reloads == reloads  # token unchanged: polled, not reloaded
    admin.update("exp1", {"coverage": 0.25}, 1)
    now[0] = 0.9
    assert cache.get("exp1").coverage == 0.25  # type: ignore[union-attr]
    admin.pause("exp1")
    assert cache.refresh(force=True) and cache.running_for_surface("home") == ()


# --- sticky assignments ---------------------------------------------------------------------------------


def test_sticky_store_first_writer_wins_and_survives_restart(open_store: Callable[[], ExperimentStore]) -> None:
    a, b = open_store(), open_store()
    assert a.sticky.lookup("exp1", 0, "user_id", "u1") is None
    assert a.sticky.record("exp1", 0, "user_id", "u1", "treatment") == "treatment"
    assert a.sticky.lookup("exp1", 0, "user_id", "u1") == "treatment"
    # Replica b computed something else (an older snapshot): the stored assignment wins.
    assert b.sticky.record("exp1", 0, "user_id", "u1", "control") == "treatment"
    assert b.sticky.lookup("exp1", 0, "user_id", "u1") == "treatment"
    # Keys are separate per bucket version and per attribute.
    assert b.sticky.lookup("exp1", 1, "user_id", "u1") is None
    assert b.sticky.lookup("exp1", 0, "device_id", "u1") is None
    a.close()
    assert open_store().sticky.lookup("exp1", 0, "user_id", "u1") == "treatment"


def test_weight_change_keeps_sticky_users_until_bucket_version_bump(open_store: Callable[[], ExperimentStore]) -> None:
    store, replica = open_store(), open_store()
    exp = store.create(spec(status="running"))
    first = {u: assign_sticky(exp, {"user_id": u}, sticky=store.sticky) for u in STICKY_USERS}
    assert all(a is not None and a.reason == "hashed" for a in first.values())

    heavier = store.update(
        "exp1",
        {
            "variants": [
                {**exp.variants[0].model_dump(), "weight": 0.1},
                {**exp.variants[1].model_dump(), "weight": 0.9},
            ]
        },
        exp.version,
    )
    plain = {u: assign(heavier, {"user_id": u}) for u in STICKY_USERS}
    assert any(plain[u].variant_key != first[u].variant_key for u in STICKY_USERS)  # type: ignore[union-attr]
    for u, a in first.items():  # the other replica, with an empty cache, reads the database
        now = assign_sticky(heavier, {"user_id": u}, sticky=replica.sticky)
        assert now is not None and a is not None and (now.variant_key, now.reason) == (a.variant_key, "sticky")

    bumped = store.update("exp1", {"bucket_version": 1}, heavier.version)
    rehashed = {u: assign_sticky(bumped, {"user_id": u}, sticky=replica.sticky) for u in STICKY_USERS}
    assert all(a is not None and a.reason == "hashed" and a.bucket_version == 1 for a in rehashed.values())
    fresh = {u: assign(bumped, {"user_id": u}) for u in STICKY_USERS}
    assert {u: a.variant_key for u, a in rehashed.items() if a} == {u: a.variant_key for u, a in fresh.items() if a}


def test_events_are_append_only(store: ExperimentStore) -> None:
    store.create(spec())
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE experiment_events SET actor = 'mallory'")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM experiment_events")
    assert [e.actor for e in store.history("exp1")] == ["admin"]
