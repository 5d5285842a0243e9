"""Synthetic impressions and clicks for the CTR family, built on the synthetic catalogue's ground truth.

:mod:`feature_store.sources.synthetic` knows each user's topic tastes and each item's topic,
creator and popularity. This module shows items to users in a context and draws a click from a
known probability, so a CTR model can be trained and checked without the real data sets.

One impression = (user, item, hour-of-day bucket, weekday, device, surface). The click logit is

    base
    + taste_weight   * log(n_topics * taste[user, topic(item)])     user x topic affinity
    + creator_quality[creator(item)]                               item-side quality
    + topic_hour[topic(item), hour_bucket]                         e.g. coffee in the morning
    + topic_device[topic(item), device]                            e.g. gaming on desktop
    + surface_effect[surface] (+ search_intent_bonus when the item is in the user's top topic)
    + weekend_effect[topic(item)] on Saturday/Sunday

so every context field really changes the click probability, and two of them only through an
interaction with the item's topic (a model has to cross fields to use them). The exact
probability is returned as ``p_click`` (tests and sanity checks use it as the oracle).

Shown items are a mix (``taste_share``) of items from the user's taste topics and items drawn by
popularity over the whole catalogue, so both clicks and non-clicks are common. Deterministic by
``seed``; the demo size (50k impressions) takes well under a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from feature_store.sources.schema import Dataset
from feature_store.sources.synthetic import SyntheticConfig, generate, ground_truth

HOUR_BUCKETS = ("night", "morning", "midday", "afternoon", "evening", "late")  # 4-hour buckets from 00:00
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEVICES = ("mobile", "desktop", "tablet")
SURFACES = ("home", "search", "related")
CTR_CATEGORICAL_FIELDS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "creator_id",
    "topic",
    "hour_bucket",
    "weekday",
    "device",
    "surface",
)
LABEL = "click"


@dataclass(frozen=True)
class SyntheticCTRConfig:
    """Size and effect strengths of the generated impressions (logit units)."""

    n_impressions: int = 50_000
    n_users: int = 2_000
    n_items: int = 500
    n_creators: int = 50
    seed: int = 0
    taste_share: float = 0.5  # share of impressions drawn from the user's taste topics
    base_logit: float = -1.6
    taste_weight: float = 0.6
    creator_quality_std: float = 0.4
    topic_hour_std: float = 0.7
    topic_device_std: float = 0.6
    surface_effect: tuple[float, float, float] = (0.0, 0.3, -0.3)  # home, search, related
    search_intent_bonus: float = 0.8
    weekend_std: float = 0.4

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def generate_ctr(config: SyntheticCTRConfig | None = None, world: Dataset | None = None) -> pd.DataFrame:
    """Impressions with the categorical fields of :data:`CTR_CATEGORICAL_FIELDS`, ``click`` and ``p_click``.

    ``world``: a dataset made by the synthetic generator (the demo's) to show its own users and items,
    so the impressions join its feature store; its size then replaces ``n_users``/``n_items``/``n_creators``.
    """
    cfg = config or SyntheticCTRConfig()
    if cfg.n_impressions < 1 or not 0.0 <= cfg.taste_share <= 1.0:
        raise ValueError("need n_impressions >= 1 and 0 <= taste_share <= 1")
    if world is None:
        # Only the catalogue and users are needed; a few events per user keep the generator quick.
        world = generate(
            SyntheticConfig(
                n_users=cfg.n_users,
                n_items=cfg.n_items,
                n_creators=cfg.n_creators,
                mean_events_per_user=3.0,
                seed=cfg.seed,
            )
        )
    truth = ground_truth(world)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xC7]))
    n = cfg.n_impressions
    n_topics = len(truth.topics)
    n_hours, n_devices = len(HOUR_BUCKETS), len(DEVICES)

    # Effects, drawn once per generated world.
    creator_quality = rng.normal(0.0, cfg.creator_quality_std, len(truth.creator_ids))
    topic_hour = rng.normal(0.0, cfg.topic_hour_std, (n_topics, n_hours))
    topic_device = rng.normal(0.0, cfg.topic_device_std, (n_topics, n_devices))
    weekend = rng.normal(0.0, cfg.weekend_std, n_topics)

    user = rng.integers(0, len(truth.user_ids), n)
    hour = rng.integers(0, n_hours, n)
    weekday = rng.integers(0, len(WEEKDAYS), n)
    device = rng.choice(n_devices, n, p=[0.6, 0.3, 0.1])
    surface = rng.choice(len(SURFACES), n, p=[0.5, 0.3, 0.2])

    # Item: from a topic of the user's taste (then by popularity inside the topic) or from the whole catalogue.
    taste = truth.user_taste
    from_taste = rng.random(n) < cfg.taste_share
    topic_draw = (rng.random(n)[:, None] > np.cumsum(taste[user], axis=1)).sum(axis=1).clip(max=n_topics - 1)
    pop = truth.item_popularity
    item = rng.choice(len(pop), n, p=pop / pop.sum())
    for t in range(n_topics):
        rows = np.flatnonzero(from_taste & (topic_draw == t))
        members = np.flatnonzero(truth.item_topic == t)
        if rows.size and members.size:
            w = pop[members] / pop[members].sum()
            item[rows] = members[rng.choice(members.size, rows.size, p=w)]

    item_topic = truth.item_topic[item]
    creator = truth.item_creator[item]
    top_topic = taste.argmax(axis=1)[user]
    surface_effect = np.asarray(cfg.surface_effect)[surface]
    search_bonus = np.where(
        (surface == SURFACES.index("search")) & (item_topic == top_topic), cfg.search_intent_bonus, 0
    )
    logit = (
        cfg.base_logit
        + cfg.taste_weight * np.log(n_topics * taste[user, item_topic])
        + creator_quality[creator]
        + topic_hour[item_topic, hour]
        + topic_device[item_topic, device]
        + surface_effect
        + search_bonus
        + np.where(weekday >= 5, weekend[item_topic], 0.0)
    )
    p_click = 1.0 / (1.0 + np.exp(-logit))
    click = (rng.random(n) < p_click).astype(np.int64)
    topics = np.asarray(truth.topics, dtype=object)
    return pd.DataFrame(
        {
            "user_id": truth.user_ids[user],
            "item_id": truth.item_ids[item],
            "creator_id": truth.creator_ids[creator],
            "topic": topics[item_topic],
            "hour_bucket": np.asarray(HOUR_BUCKETS, dtype=object)[hour],
            "weekday": np.asarray(WEEKDAYS, dtype=object)[weekday],
            "device": np.asarray(DEVICES, dtype=object)[device],
            "surface": np.asarray(SURFACES, dtype=object)[surface],
            LABEL: click,
            "p_click": p_click,
        }
    )
