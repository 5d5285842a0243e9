"""Field sources of served CTR models, and the user_profile view they read."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_store.pipelines.profile import activity_band, compute_user_profile
from models.ctr.features import FieldSource, context_fields, parse_sources, pinned_refs, transform


def test_sources_parse_and_name_their_pins() -> None:
    sources = parse_sources(
        {
            "user_id": "request:user_id",
            "item_id": "request:item_id",
            "top_topic": "user_profile@v2:top_topic",
            "popularity_band": "item_features@v1:popularity|log2_band",
            "device": "context:device",
            "creator_id": "item_features@v1:creator_id",
        }
    )
    assert [s.kind for s in sources] == ["request", "request", "feature", "feature", "context", "feature"]
    assert pinned_refs(sources) == ["user_profile@v2", "item_features@v1"]
    assert context_fields(sources) == {"device"}
    assert sources[3] == FieldSource("popularity_band", "feature", "popularity", "item_features@v1", "log2_band")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("request:session", "is none of request:user_id"),
        ("item_features@v1", "must name a feature"),
        ("item_features@v1:popularity|cube", "unknown transform"),
        ("context:", "is none of request:user_id"),
    ],
)
def test_bad_sources_are_refused(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FieldSource.parse("f", source)


def test_log2_bands() -> None:
    assert [transform("log2_band", n) for n in (0, 1, 2, 3, 4, 7, 8, 1000)] == [
        "b0",
        "b1",
        "b1",
        "b2",
        "b2",
        "b3",
        "b3",
        "b9",
    ]
    assert transform("log2_band", None) is None and transform(None, "x") == "x"
    with pytest.raises(ValueError, match="unknown field transform"):
        transform("cube", 3)


def test_user_profile_uses_only_the_past() -> None:
    t = pd.Timestamp("2024-02-01", tz="UTC")
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "attributes": [["topic:jazz"], ["topic:coffee"], []]})
    inter = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u1"],
            "item_id": ["a", "b", "b", "c", "a"],
            "timestamp": pd.to_datetime(
                ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-03-01"], utc=True
            ),
        }
    )
    frame = compute_user_profile(items, inter, t).set_index("user_id")
    # u1: coffee twice, jazz once before t (the later jazz does not count); u2's only item has no topic.
    assert frame.loc["u1", "top_topic"] == "coffee" and frame.loc["u2", "top_topic"] == ""
    assert frame.loc["u1", "activity"] == "low" and set(frame.index) == {"u1", "u2"}
    assert [activity_band(n) for n in (0, 9, 10, 49, 50)] == ["low", "low", "mid", "mid", "high"]


def test_the_services_column_encoding_equals_encode_rows() -> None:
    """services/ctr/app.py encodes column-wise for speed; it must give encode_rows' ids and counts."""
    from models.ctr.data import build_spec, encode_rows
    from services.ctr.app import _ids

    train = pd.DataFrame({"a": ["x", "y", "y", "3", None], "b": [1, 2, 2.5, True, 7]})
    spec = build_spec(train, ["a", "b"])
    values = {"a": ["x", "z", None, "3", 3, "y"], "b": [1, 1.0, 2.5, True, "2", None]}
    expected, _, unknown = encode_rows(spec, [{"a": a, "b": b} for a, b in zip(values["a"], values["b"], strict=True)])
    for j, field in enumerate(spec.categorical):
        ids, n_default = _ids(field, values[field.name])
        assert ids.tolist() == expected[:, j].tolist(), field.name
        assert n_default == unknown[field.name], field.name


def test_item_value_cache_serves_fresh_rows_and_forgets_stale_ones() -> None:
    import time

    from services.ctr.app import EntityValueCache

    cache = EntityValueCache(ttl_s=0.2, max_entries=3)
    key = ("item_features@v1", (("creator_id", None),))
    assert cache.get_many(key, ["i1", "i2"]) == [None, None]
    cache.put_many(key, ["i1", "i2"], [("c1",), (None,)])  # an absent row is cached as absent
    assert cache.get_many(key, ["i1", "i2", "i3"]) == [("c1",), (None,), None]
    assert cache.get_many(("item_features@v2", key[1]), ["i1"]) == [None]  # per pinned version
    cache.put_many(key, ["i3", "i4"], [("c3",), ("c4",)])  # over max_entries: starts over
    assert cache.get_many(key, ["i1", "i3"]) == [None, ("c3",)]
    time.sleep(0.25)
    assert cache.get_many(key, ["i3"]) == [None]
