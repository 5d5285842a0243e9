"""The project's online reader against Feast itself, on real SQLite and a real (private) Redis.

Several versions of a view are online at once; the reader must agree value for value with
Feast's get_online_features for each, report missing entities without raising, name the
available versions for an unknown one, and keep serving the live version while a new one is
being materialized.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store import feast_ops
from feature_store.build import lte_fields, window_of, write_version
from feature_store.online import FeatureNotOnline, make_client
from feature_store.retention import FeatureVersionPinned, StaticPins
from feature_store.versions import FeatureField, UnknownFeatureVersion, VersionCatalog
from tests.conftest import make_settings

N_USERS = 300
DIM = 16
T1 = pd.Timestamp("2024-03-01", tz="UTC")
T2 = pd.Timestamp("2024-06-01", tz="UTC")


def _lte_frame(seed: int, as_of: pd.Timestamp, n_users: int = N_USERS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(n_users)]
    # Two snapshots per user so materialization must pick the latest one.
    early = as_of - pd.Timedelta(days=30)
    return pd.DataFrame(
        {
            "user_id": users * 2,
            "event_timestamp": [early] * n_users + [as_of] * n_users,
            "lte": list(rng.standard_normal((2 * n_users, DIM)).astype(np.float32)),
            "n_items": rng.integers(1, 50, 2 * n_users),
        }
    )


def _recent_frame(as_of: pd.Timestamp) -> pd.DataFrame:
    users = [f"u{i}" for i in range(0, N_USERS, 2)]  # half the users have no recent items row
    return pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": [as_of] * len(users),
            "item_ids": [[f"i{(j * 7 + k) % 97}" for k in range(j % 5 + 1)] for j in range(len(users))],
            "timestamps": [[1_700_000_000 + k for k in range(j % 5 + 1)] for j in range(len(users))],
            "score": [float(j) / 3 for j in range(len(users))],
            "segment": [f"seg-{j % 3}" for j in range(len(users))],
        }
    )


RECENT_FIELDS = [
    FeatureField(name="item_ids", dtype="string_list"),
    FeatureField(name="timestamps", dtype="int64_list"),
    FeatureField(name="score", dtype="double"),
    FeatureField(name="segment", dtype="string"),
]


def _window(as_of: pd.Timestamp):
    return window_of(as_of.to_pydatetime(), timedelta(days=7), timedelta(days=365), None, None)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def store_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    data_dir: Path = tmp_path_factory.mktemp(f"fs-{request.param}")
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = make_settings(data_dir, request.param, url)
    frames = {1: _lte_frame(1, T1), 2: _lte_frame(2, T2)}
    for n in (1, 2):
        write_version(
            settings,
            view="lte_avg",
            entity="user",
            frame=frames[n],
            fields=lte_fields(DIM),
            window=_window(T1 if n == 1 else T2),
            dataset="test",
            basis_fingerprint="fp-test",
        )
    write_version(
        settings,
        view="recent_items",
        entity="user",
        frame=_recent_frame(T2),
        fields=RECENT_FIELDS,
        window=_window(T2),
        dataset="test",
    )
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    for ref in ("lte_avg@v1", "lte_avg@v2", "recent_items@v1"):
        feast_ops.materialize(settings, ref, store)
    client = make_client(settings)
    yield settings, store, client, frames
    client.close()


def _feast_read(store, feast_view: str, features: list[str], join_key: str, ids: list[str]) -> dict[str, list]:
    refs = [f"{feast_view}:{f}" for f in features]
    return store.get_online_features(features=refs, entity_rows=[{join_key: e} for e in ids]).to_dict()


@pytest.mark.parametrize("ref", ["lte_avg@v1", "lte_avg@v2"])
def test_vector_reads_equal_feast(store_env, ref: str) -> None:
    _, store, client, _ = store_env
    ids = [f"u{i}" for i in range(N_USERS)] + ["nobody", "u-missing"]
    ours = client.read(ref, ids)
    spec = client.version(ref)
    theirs = _feast_read(store, spec.feast_name, ["lte", "n_items"], "user_id", ids)
    for i, e in enumerate(ids):
        if theirs["lte"][i] is None:
            assert not ours.present[i], e
            assert np.all(ours.values["lte"][i] == 0) and ours.values["n_items"][i] == 0
        else:
            assert ours.present[i], e
            np.testing.assert_array_equal(ours.values["lte"][i], np.asarray(theirs["lte"][i], dtype=np.float32))
            assert ours.values["n_items"][i] == theirs["n_items"][i]
    assert ours.missing == ["nobody", "u-missing"]


def test_list_and_scalar_reads_equal_feast(store_env) -> None:
    _, store, client, _ = store_env
    ids = [f"u{i}" for i in range(N_USERS)]
    ours = client.read("recent_items@v1", ids)
    theirs = _feast_read(store, "recent_items__v1", [f.name for f in RECENT_FIELDS], "user_id", ids)
    for i in range(len(ids)):
        if theirs["item_ids"][i] is None:
            assert not ours.present[i]
            assert ours.values["item_ids"][i] == [] and ours.values["segment"][i] == ""
            continue
        for f in RECENT_FIELDS:
            assert ours.values[f.name][i] == theirs[f.name][i], (ids[i], f.name)
    assert int(ours.present.sum()) == N_USERS // 2


def test_versions_side_by_side_hold_their_own_latest_snapshot(store_env) -> None:
    _, _, client, frames = store_env
    for n in (1, 2):
        rows = client.read(f"lte_avg@v{n}", ["u3"])
        expected = frames[n][frames[n].user_id == "u3"].sort_values("event_timestamp").iloc[-1]
        np.testing.assert_array_equal(rows.values["lte"][0], expected.lte)
        assert rows.event_ts[0] == (T1 if n == 1 else T2).to_pydatetime()
    a = client.read("lte_avg@v1", ["u3"]).values["lte"][0]
    b = client.read("lte_avg@v2", ["u3"]).values["lte"][0]
    assert not np.array_equal(a, b)


def test_single_feature_ref(store_env) -> None:
    _, _, client, _ = store_env
    rows = client.read("lte_avg@v2:n_items", ["u1", "u2"])
    assert list(rows.values) == ["n_items"]


def test_unknown_version_names_available_ones(store_env) -> None:
    _, _, client, _ = store_env
    with pytest.raises(UnknownFeatureVersion) as err:
        client.read("lte_avg@v9", ["u1"])
    assert "lte_avg@v1, lte_avg@v2" in str(err.value)
    with pytest.raises(UnknownFeatureVersion, match="available: none"):
        client.read("no_such_view@v1", ["u1"])


def test_materializing_new_version_never_disturbs_live_reads(store_env) -> None:
    settings, store, client, _ = store_env
    ids = [f"u{i}" for i in range(0, N_USERS, 3)]
    baseline = client.read("lte_avg@v2", ids).values["lte"].copy()
    spec = write_version(
        settings,
        view="lte_avg",
        entity="user",
        frame=_lte_frame(3, T2 + pd.Timedelta(days=10), n_users=N_USERS * 3),
        fields=lte_fields(DIM),
        window=_window(T2),
        dataset="test",
    )
    feast_ops.apply(settings, store)
    errors: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal reads
        reader_client = make_client(settings)  # its own connection, as another service process would have
        try:
            while not stop.is_set():
                got = reader_client.read("lte_avg@v2", ids).values["lte"]
                if not np.array_equal(got, baseline):
                    raise AssertionError("live version changed during materialization")
                reads += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            reader_client.close()

    t = threading.Thread(target=hammer)
    t.start()
    try:
        feast_ops.materialize(settings, spec.ref, store)
    finally:
        stop.set()
        t.join(timeout=30)
    assert not errors, errors
    assert reads > 0
    assert client.read(spec.ref, ["u700"]).present[0]


def test_retention_guard_and_retire(store_env) -> None:
    settings, store, client, _ = store_env
    pins = StaticPins({"recent_items@v1": ["seq-lte@1", "seq-lte@2"]})
    with pytest.raises(FeatureVersionPinned, match="seq-lte@1, seq-lte@2"):
        feast_ops.retire(settings, "recent_items@v1", pins)
    assert client.read("recent_items@v1", ["u0"]).present[0]
    # A throwaway version nobody pins can go; its online data and Feast view go with it.
    spec = write_version(
        settings,
        view="scratch",
        entity="user",
        frame=_lte_frame(4, T1, n_users=10),
        fields=lte_fields(DIM),
        window=_window(T1),
        dataset="test",
    )
    feast_ops.apply(settings, store)
    feast_ops.materialize(settings, spec.ref, store)
    assert client.read(spec.ref, ["u1"]).present[0]
    feast_ops.retire(settings, spec.ref, pins)
    assert VersionCatalog(settings.catalog_dir).status("scratch", 1).state == "retired"
    assert spec.feast_name not in {fv.name for fv in store.list_feature_views()}
    fresh = make_client(settings)
    try:
        rows = fresh.read(spec.ref, ["u1"])
        assert not rows.present[0]  # Redis: keys' fields deleted by Feast's teardown
    except FeatureNotOnline:
        pass  # SQLite: the table is dropped
    finally:
        fresh.close()
    assert not (settings.data_dir / spec.source_path).exists()


def test_historical_returns_every_row_in_input_order_with_defaults(store_env) -> None:
    settings, store, _, frames = store_env
    rng = np.random.default_rng(7)
    n = 2_000
    users = rng.choice([f"u{i}" for i in range(N_USERS)] + ["ghost"], size=n)
    # Times before, between and after the snapshots, shuffled: rows before a user's first
    # snapshot are exactly the ones Feast's file offline store drops.
    times = T1 - pd.Timedelta(days=60) + pd.to_timedelta(rng.integers(0, 200 * 86400, size=n), unit="s")
    entity_df = pd.DataFrame({"user_id": users, "event_timestamp": times, "label": np.arange(n)})
    out = feast_ops.historical_features(settings, entity_df, ["lte_avg@v1", "recent_items@v1:segment"], store)
    assert len(out) == n
    assert out["label"].tolist() == list(range(n))
    assert out["user_id"].tolist() == users.tolist()
    f = frames[1]
    snaps = {(u, t): (lte, k) for u, t, lte, k in zip(f.user_id, f.event_timestamp, f.lte, f.n_items, strict=True)}
    early, late = T1 - pd.Timedelta(days=30), T1
    for row in out.itertuples(index=False):
        t = row.event_timestamp
        expect_t = late if t >= late else early if t >= early else None
        present = out.at[row.label, "lte_avg@v1:present"]
        if expect_t is None or row.user_id == "ghost":
            assert not present
            assert out.at[row.label, "lte_avg@v1:n_items"] == 0
            assert np.all(np.asarray(out.at[row.label, "lte_avg@v1:lte"]) == 0)
        else:
            lte, k = snaps[(row.user_id, expect_t)]
            assert present
            np.testing.assert_allclose(np.asarray(out.at[row.label, "lte_avg@v1:lte"], dtype=np.float32), lte)
            assert out.at[row.label, "lte_avg@v1:n_items"] == k
