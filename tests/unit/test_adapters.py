"""Every dataset adapter on the real shared data: canonical, self-consistent, and the known counts.

The data are licence-restricted and never copied here: they are read from the configured
datasets root (RECSYS_DATASETS_ROOT, default ../shared/datasets) and these tests skip when it is
absent. Each dataset is loaded once per module (``loaded`` caches), with ``on_bad_rows="skip"``
so that structural checks run even on a file with broken lines; whether the default "error" mode
stops at the right line is checked separately. The counts come from the datasets' README.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.config import FeatureStoreSettings
from feature_store.sources.adapters import list_datasets, load_dataset
from feature_store.sources.loading import DatasetNotFoundError, LoadReport, MalformedRowError
from feature_store.sources.schema import (
    DAY_INDEX_EPOCH,
    ITEM_COLUMNS,
    Dataset,
    validate_interactions,
    validate_items,
)

pytestmark = pytest.mark.datasets

Loader = Callable[[str], Dataset]
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def datasets_root() -> Path:
    root = FeatureStoreSettings().datasets_root
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root}; set RECSYS_DATASETS_ROOT to run the real-data tests")
    return root


@pytest.fixture(scope="module")
def loaded(datasets_root: Path) -> Loader:
    """Load each dataset at most once per module; a dataset missing from the root skips its tests."""
    cache: dict[str, Dataset] = {}

    def get(name: str) -> Dataset:
        if name not in cache:
            try:
                cache[name] = load_dataset(name, root=datasets_root, on_bad_rows="skip")
            except DatasetNotFoundError as exc:
                pytest.skip(f"{name} is not in the shared datasets: {exc}")
        return cache[name]

    return get


def n_users(ds: Dataset) -> int:
    return int(ds.interactions["user_id"].nunique())


def n_items(ds: Dataset) -> int:
    return int(ds.interactions["item_id"].nunique())


@pytest.mark.parametrize("name", list_datasets())
def test_canonical_and_self_consistent(loaded: Loader, name: str) -> None:
    ds = loaded(name)
    x, items = ds.interactions, ds.items
    assert ds.name == name and ds.time_kind in ("unix", "day_index")
    assert len(x) > 0
    pd.testing.assert_frame_equal(validate_interactions(x), x)
    pd.testing.assert_frame_equal(validate_items(items), items)
    assert list(items.columns) == list(ITEM_COLUMNS)
    assert x["timestamp"].dtype == "datetime64[us, UTC]"
    for col in ("user_id", "item_id"):
        assert x[col].map(type).eq(str).all(), col
    assert items["item_id"].is_unique
    assert x["item_id"].isin(items["item_id"]).all(), "every interacted item has an items row"
    assert all(isinstance(r, LoadReport) for r in ds.meta["load_reports"])
    if "split" in ds.meta:
        assert len(ds.meta["split"]) == len(x)  # type: ignore[arg-type]
    if ds.time_kind == "unix":
        assert x["timestamp"].min() > pd.Timestamp("1990-01-01", tz="UTC")
        assert x["timestamp"].max() < pd.Timestamp("2020-01-01", tz="UTC")
    else:
        check_day_index(x)


def check_day_index(x: pd.DataFrame) -> None:
    """Order-only data: the k-th event (or basket) of a user in the file is EPOCH + k days."""
    offset = x["timestamp"] - DAY_INDEX_EPOCH
    assert (offset % DAY == pd.Timedelta(0)).all()
    days = (offset // DAY).to_numpy()
    if "basket_id" in x.columns:
        first = ~x.duplicated(["user_id", "basket_id"])
        step = pd.Series(np.nan, index=x.index)
        step[first] = x[first].groupby("user_id", sort=False).cumcount()
        expected = step.groupby(x["basket_id"]).transform("max")  # every line of a basket
    else:
        expected = x.groupby("user_id", sort=False).cumcount()
    assert (days == expected.to_numpy()).all()


def test_ml_latest_small(loaded: Loader) -> None:
    ds = loaded("ml-latest-small")
    assert (len(ds.interactions), n_users(ds), n_items(ds)) == (100_004, 671, 9_066)
    assert ds.interactions["value"].between(0.5, 5.0).all()
    assert ds.interactions["timestamp"].min().year == 1995 and ds.interactions["timestamp"].max().year == 2016
    assert len(ds.items) >= 9_066 and ds.items["text"].ne("").all()
    genres = ds.items["attributes"].explode().dropna()
    assert genres.str.startswith("genre:").all()


def test_ml_1m_timed_part(loaded: Loader) -> None:
    ds = loaded("ml-1m")
    x, split = ds.interactions, np.asarray(ds.meta["split"])
    assert (len(x), n_users(ds), n_items(ds)) == (299_418, 5_755, 3_527)
    assert "split" not in x.columns
    assert pd.Series(split).value_counts().to_dict() == {"valid": 133_067, "test": 166_351}
    # A per-user temporal split: all of a user's valid ratings are at or before their test ratings.
    last_valid = x[split == "valid"].groupby("user_id")["timestamp"].max()
    first_test = x[split == "test"].groupby("user_id")["timestamp"].min()
    both = last_valid.index.intersection(first_test.index)
    assert (last_valid[both] <= first_test[both]).all()
    assert len(ds.items) == 3_883  # all of movies.dat, rated or not


def test_groceries_baskets(loaded: Loader, datasets_root: Path) -> None:
    ds = loaded("groceries")
    x = ds.interactions
    (report,) = ds.meta["load_reports"]
    assert report.rows_read == 38_765 and len(x) == report.rows_kept
    assert (n_users(ds), n_items(ds), x["basket_id"].nunique()) == (3_898, 167, 14_963)
    assert (x["basket_id"] == x["user_id"] + ":" + x["timestamp"].dt.strftime("%Y-%m-%d")).all()
    assert (x["value"] == 1.0).all() and (ds.items["text"] == ds.items["item_id"]).all()
    if report.rows_skipped:
        # The default policy stops at exactly the first line the skip report names.
        with pytest.raises(MalformedRowError) as info:
            load_dataset("groceries", root=datasets_root)
        assert report.reasons[0] == f"line {info.value.line}: {info.value.reason}"


def test_tafeng_baskets(loaded: Loader) -> None:
    ds = loaded("tafeng")
    x, split = ds.interactions, np.asarray(ds.meta["split"])
    assert (len(x), n_users(ds), n_items(ds), x["basket_id"].nunique()) == (571_933, 13_858, 11_997, 91_227)
    assert x.loc[split == "future", "user_id"].nunique() == 13_858
    assert x.loc[split == "future"].groupby("user_id")["basket_id"].nunique().eq(1).all()


def test_frappe(loaded: Loader) -> None:
    ds = loaded("frappe")
    x, split = ds.interactions, np.asarray(ds.meta["split"])
    assert pd.Series(split).value_counts().to_dict() == {"train": 57_722, "test": 28_860}
    assert n_items(ds) == 4_082 and x["value"].isin([0.0, 1.0]).all()
    assert 0.30 < x["value"].mean() < 0.36  # negatives sampled 2:1
    ranges = ds.meta["field_ranges"]
    assert list(ranges) == ["user", "item", *[f"context_{j}" for j in range(2, 10)]]  # type: ignore[arg-type]
    bounds = list(ranges.values())  # type: ignore[union-attr]
    assert bounds[0][0] == 0 and all(b[1] + 1 == n[0] for b, n in itertools.pairwise(bounds))
    for j in range(2, 10):
        lo, hi = ranges[f"context_{j}"]  # type: ignore[index]
        assert x[f"context_{j}"].between(0, hi - lo).all()
    lo, hi = ranges["item"]  # type: ignore[index]
    assert x["item_id"].astype(int).between(lo, hi).all()


def test_criteo(loaded: Loader) -> None:
    ds = loaded("criteo")
    x = ds.interactions
    assert len(x) == 1_999 and x["user_id"].is_unique and n_items(ds) == 1
    numeric = [c for c in x.columns if c.startswith("context_I")]
    categorical = [c for c in x.columns if c.startswith("context_C")]
    assert (len(numeric), len(categorical)) == (13, 26)
    assert all(x[c].dtype == "Int64" for c in numeric)
    assert x["value"].mean() == pytest.approx(0.209, abs=0.001)


def test_lastfm_2k(loaded: Loader) -> None:
    ds = loaded("lastfm-2k")
    assert (len(ds.interactions), n_users(ds), n_items(ds)) == (92_834, 1_892, 17_632)
    assert (ds.items["creator_id"] == ds.items["item_id"]).all() and ds.items["text"].ne("").all()
    assert (ds.interactions["value"] >= 1).all()


def test_lastfm_1k_sample(loaded: Loader) -> None:
    ds = loaded("lastfm-1k-sample")
    items = ds.items
    assert len(ds.interactions) == 5_000 and n_users(ds) == 2
    hashed = items["item_id"].str.startswith("h:")
    assert (~hashed).sum() == 881  # tracks with a MusicBrainz id
    assert items["text"].str.contains(" by ").all() and items["creator_id"].notna().all()


def test_mpd_sample(loaded: Loader) -> None:
    ds = loaded("mpd-sample")
    assert (len(ds.interactions), n_users(ds), n_items(ds)) == (1_448, 29, 1_397)
    assert ds.items["creator_id"].nunique() == 841
    assert ds.items["attributes"].map(lambda a: len(a) == 1 and a[0].startswith("album:")).all()


def test_yoochoose(loaded: Loader) -> None:
    ds = loaded("yoochoose-100k")
    x, split = ds.interactions, np.asarray(ds.meta["split"])
    assert (x["session_id"] == x["user_id"]).all() and n_items(ds) == 2_933
    assert pd.Series(split).value_counts().to_dict() == {"train": 70_278, "test": 13_568}
    assert (x.loc[split == "train", "session_id"].nunique(), x.loc[split == "test", "session_id"].nunique()) == (
        17_794,
        3_416,
    )
    assert (x["timestamp"].dt.microsecond % 1000 == 0).all()  # millisecond source times survive


def test_diginetica(loaded: Loader) -> None:
    ds = loaded("diginetica-sample")
    x = ds.interactions
    assert (len(x), x["session_id"].nunique(), n_items(ds)) == (12_391, 2_986, 7_139)
    anonymous = x["user_id"].str.startswith("session:")
    assert anonymous.any() and (~anonymous).any()
    assert (x.loc[anonymous, "user_id"] == "session:" + x.loc[anonymous, "session_id"]).all()


@pytest.mark.parametrize(
    ("name", "users", "items", "rows"),
    [
        ("amazon-beauty", 22_363, 12_101, 198_502),
        ("amazon-sports", 35_598, 18_357, 296_337),
    ],
)
def test_amazon_s3rec(loaded: Loader, name: str, users: int, items: int, rows: int) -> None:
    ds = loaded(name)
    assert (n_users(ds), n_items(ds), len(ds.interactions)) == (users, items, rows)
    assert ds.items["creator_id"].isna().all() and ds.items["text"].eq("").all()
    tokens = ds.items["attributes"].explode().dropna()
    assert len(tokens) > 0 and tokens.str.fullmatch(r"attr:\d+").all()


def test_amazon_musical_instruments(loaded: Loader) -> None:
    ds = loaded("amazon-musical-instruments")
    assert (len(ds.interactions), n_users(ds), n_items(ds)) == (10_261, 1_429, 900)
    assert ds.interactions["value"].isin([1.0, 2.0, 3.0, 4.0, 5.0]).all()
    reviews = ds.meta["reviews"]
    assert isinstance(reviews, pd.DataFrame) and len(reviews) == len(ds.interactions)


@pytest.mark.parametrize(
    ("pair", "partner", "shared_users", "train_rows"),
    [
        ("cdr-sport-cloth", "cdr-cloth-sport", 9_928, 92_612),
        ("cdr-cloth-sport", "cdr-sport-cloth", 9_928, 87_829),
        ("cdr-electronic-phone", "cdr-phone-electronic", 3_325, 115_554),
        ("cdr-phone-electronic", "cdr-electronic-phone", 3_325, 50_407),
    ],
)
def test_cross_domain_pairs(loaded: Loader, pair: str, partner: str, shared_users: int, train_rows: int) -> None:
    ds, other = loaded(pair), loaded(partner)
    split = np.asarray(ds.meta["split"])
    assert (split == "train").sum() == train_rows and ds.meta["partner_dataset"] == partner
    assert set(ds.interactions["user_id"]) == set(other.interactions["user_id"])
    assert n_users(ds) == shared_users
    # Train rows come before test rows of the same user on the synthetic calendar.
    x = ds.interactions
    last_train = x[split == "train"].groupby("user_id")["timestamp"].max()
    first_test = x[split == "test"].groupby("user_id")["timestamp"].min()
    assert (last_train[first_test.index] < first_test).all()
