"""The version catalog: immutable specs, monotonic numbers, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from feature_store.retention import CombinedPins, FeatureVersionPinned, NoPins, StaticPins, check_deletable
from feature_store.versions import (
    ComputationWindow,
    FeatureField,
    FeatureStoreError,
    FeatureVersion,
    UnknownFeatureVersion,
    VersionCatalog,
    VersionConflict,
    VersionStatus,
    parse_ref,
    schema_hash,
)

FIELDS = (FeatureField(name="lte", dtype="float_list", length=8), FeatureField(name="n_items", dtype="int64"))


def _spec(version: int, dataset: str = "d", view: str = "lte_avg") -> FeatureVersion:
    return FeatureVersion(
        view=view,
        version=version,
        entity="user",
        fields=FIELDS,
        schema_hash=schema_hash("user", FIELDS),
        basis_fingerprint="abc",
        window=ComputationWindow(as_of=datetime(2024, 1, 1, tzinfo=UTC), lag_seconds=86400, window_seconds=864000),
        dataset=dataset,
        source_path=f"offline/{view}/v{version}.parquet",
        rows=10,
        created_at=datetime.now(UTC),
    )


def test_parse_ref() -> None:
    assert parse_ref("lte_avg@v3") == ("lte_avg", 3, None)
    assert parse_ref("lte_avg@v12:lte") == ("lte_avg", 12, "lte")
    for bad in ("lte_avg", "lte_avg@3", "LTE@v1", "lte_avg@v1:", "@v1"):
        with pytest.raises(FeatureStoreError, match="bad feature ref"):
            parse_ref(bad)


def test_register_is_immutable(tmp_path: Path) -> None:
    cat = VersionCatalog(tmp_path)
    assert cat.next_version("lte_avg") == 1
    cat.register(_spec(1))
    assert cat.next_version("lte_avg") == 2
    cat.register(_spec(1))  # identical content (created_at aside): a no-op
    with pytest.raises(VersionConflict, match=r"lte_avg@v1 already exists.*lte_avg@v2"):
        cat.register(_spec(1, dataset="other"))
    assert cat.get("lte_avg", 1).dataset == "d"
    assert cat.status("lte_avg", 1).state == "offline"


def test_unknown_versions_list_what_exists(tmp_path: Path) -> None:
    cat = VersionCatalog(tmp_path)
    cat.register(_spec(1))
    cat.register(_spec(2))
    with pytest.raises(UnknownFeatureVersion, match=r"lte_avg@v7; available: lte_avg@v1, lte_avg@v2"):
        cat.resolve("lte_avg@v7")
    with pytest.raises(UnknownFeatureVersion, match="available: none"):
        cat.get("nothing", 1)


def test_status_is_separate_and_retired_versions_leave_the_active_set(tmp_path: Path) -> None:
    cat = VersionCatalog(tmp_path)
    cat.register(_spec(1))
    cat.register(_spec(2))
    cat.set_status("lte_avg", 2, VersionStatus(state="online", online_store="sqlite"))
    cat.set_status("lte_avg", 1, VersionStatus(state="retired"))
    assert [v.ref for v in cat.active_versions()] == ["lte_avg@v2"]
    assert cat.online_versions("lte_avg") == [2]
    assert [v.ref for v in cat.all_versions()] == ["lte_avg@v1", "lte_avg@v2"]


def test_schema_hash_depends_on_structure_only() -> None:
    a = schema_hash("user", FIELDS)
    assert a == schema_hash("user", list(FIELDS))
    assert a != schema_hash("item", FIELDS)
    longer = (FeatureField(name="lte", dtype="float_list", length=16), FIELDS[1])
    assert a != schema_hash("user", longer)


def test_retention_guard_names_pinning_models() -> None:
    check_deletable("lte_avg@v1", NoPins())
    pins = CombinedPins(StaticPins({"lte_avg@v1": ["seq@1"]}), StaticPins({"lte_avg@v1": ["seq@1", "seq@3"]}))
    with pytest.raises(FeatureVersionPinned, match=r"pinned by 2 model version\(s\): seq@1, seq@3"):
        check_deletable("lte_avg@v1", pins)
