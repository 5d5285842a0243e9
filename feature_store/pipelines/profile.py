"""The ``user_profile`` view: slow-moving categorical facts about a user, for rankers.

Per user at the as-of time ``T`` (only interactions strictly before ``T``):

* ``top_topic`` (str): the most frequent ``topic:<name>`` attribute among the items the user
  interacted with (ties: alphabetical); ``""`` when none of their items has a topic;
* ``activity`` (str): ``"low"`` (< 10 interactions), ``"mid"`` (< 50) or ``"high"``.

One snapshot at ``T``: a ranker trained on impressions after ``T`` and served with this version sees
exactly the values it was trained with (no point-in-time join is needed, none can leak).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from feature_store.config import FeatureStoreSettings
from feature_store.versions import FeatureField, FeatureVersion

PROFILE_FIELDS = [FeatureField(name="top_topic", dtype="string"), FeatureField(name="activity", dtype="string")]
ACTIVITY_BANDS = ((10, "low"), (50, "mid"))  # below 10 -> low, below 50 -> mid, else high


def activity_band(n: int) -> str:
    for limit, name in ACTIVITY_BANDS:
        if n < limit:
            return name
    return "high"


def item_topics(items: pd.DataFrame) -> pd.Series:
    """item_id -> its ``topic:`` attribute value ("" without one)."""

    def topic(attrs: object) -> str:
        for a in attrs if isinstance(attrs, list | tuple | np.ndarray) else []:
            if isinstance(a, str) and a.startswith("topic:"):
                return a[len("topic:") :]
        return ""

    attrs = items["attributes"] if "attributes" in items.columns else pd.Series([[]] * len(items))
    return pd.Series([topic(a) for a in attrs], index=items["item_id"].astype(str).to_numpy())


def compute_user_profile(items: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per user with an interaction before ``as_of``: user_id, event_timestamp, top_topic, activity."""
    before = interactions.loc[interactions["timestamp"] < as_of, ["user_id", "item_id"]].astype(str)
    topics = item_topics(items)
    before = before.assign(topic=topics.reindex(before["item_id"].to_numpy()).fillna("").to_numpy())
    counts = before.groupby("user_id").size()
    with_topic = before[before["topic"] != ""]
    per_topic = with_topic.groupby(["user_id", "topic"]).size().rename("n").reset_index()
    per_topic = per_topic.sort_values(["user_id", "n", "topic"], ascending=[True, False, True])
    top = per_topic.drop_duplicates("user_id").set_index("user_id")["topic"]
    users = counts.index.to_numpy()
    return pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": pd.Series([as_of] * len(users), dtype="datetime64[us, UTC]"),
            "top_topic": top.reindex(users).fillna("").to_numpy(dtype=object),
            "activity": [activity_band(int(n)) for n in counts.to_numpy()],
        }
    )


def build_user_profile(settings: FeatureStoreSettings, *, dataset: str, as_of: str | None = None) -> FeatureVersion:
    """A new version of ``user_profile`` computed from ``dataset`` as of ``as_of`` (default: its end)."""
    from feature_store.build import _as_of, window_of, write_version
    from feature_store.sources.prepared import load_prepared

    ds = load_prepared(settings, dataset)
    t_as_of = _as_of(ds.interactions, as_of)
    frame = compute_user_profile(ds.items, ds.interactions, t_as_of)
    return write_version(
        settings,
        view="user_profile",
        entity="user",
        frame=frame,
        fields=PROFILE_FIELDS,
        window=window_of(t_as_of.to_pydatetime(), timedelta(0), timedelta(0), None, None),
        dataset=dataset,
        description="top topic and activity band from interactions strictly before as_of",
    )
