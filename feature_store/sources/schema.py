"""The canonical data format every adapter produces (documented in docs/data-format.md).

interactions: one row per event
    user_id    str    required
    item_id    str    required
    timestamp  datetime64[us, UTC]   required; order-only datasets use a day index (see below)
    basket_id  str    optional; next-basket data (one basket = one shopping trip)
    session_id str    optional; session data
    value      float  optional; rating, play count, or CTR label
    context_*  any    optional; request context (CTR datasets)

items: one row per item
    item_id    str        required, unique
    text       str        optional ("" when the dataset has none)
    creator_id str|None   optional: artist, brand, author
    attributes list[str]  optional: "kind:value" tokens, e.g. "genre:Comedy", "brand:17"

Order-only datasets (no dates): the k-th event (or basket) of a user gets the timestamp
DAY_INDEX_EPOCH + k days. Order is kept; gaps carry no meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

INTERACTION_REQUIRED = ("user_id", "item_id", "timestamp")
INTERACTION_OPTIONAL = ("basket_id", "session_id", "value")
CONTEXT_PREFIX = "context_"
ITEM_COLUMNS = ("item_id", "text", "creator_id", "attributes")

# Order-only datasets are placed on a synthetic calendar starting here, one day per step.
DAY_INDEX_EPOCH = pd.Timestamp("2000-01-01", tz="UTC")

TimeKind = Literal["unix", "day_index"]


class SchemaError(ValueError):
    """A frame does not follow the canonical format."""


@dataclass
class Dataset:
    """A dataset in canonical form."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    # "unix": real times; "day_index": order only, one synthetic day per step.
    time_kind: TimeKind = "unix"
    meta: dict[str, object] = field(default_factory=dict)


def to_utc_microseconds(ts: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC with microsecond resolution.

    Microseconds, because DuckDB (the offline store) rejects nanosecond timestamps.
    """
    out = pd.to_datetime(ts, utc=True)
    return out.astype("datetime64[us, UTC]")


def validate_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise an interactions frame; returns it with canonical dtypes."""
    missing = [c for c in INTERACTION_REQUIRED if c not in df.columns]
    if missing:
        raise SchemaError(f"interactions are missing required columns {missing}; have {list(df.columns)}")
    unknown = [
        c
        for c in df.columns
        if c not in INTERACTION_REQUIRED and c not in INTERACTION_OPTIONAL and not c.startswith(CONTEXT_PREFIX)
    ]
    if unknown:
        raise SchemaError(
            f"interactions have unknown columns {unknown}; extra request context must be named '{CONTEXT_PREFIX}<name>'"
        )
    out = df.copy()
    for col in ("user_id", "item_id", "basket_id", "session_id"):
        if col in out.columns:
            if out[col].isna().any() and col in INTERACTION_REQUIRED:
                raise SchemaError(f"interactions.{col} has {int(out[col].isna().sum())} missing values")
            out[col] = out[col].astype(str)
    if out["timestamp"].isna().any():
        raise SchemaError(f"interactions.timestamp has {int(out['timestamp'].isna().sum())} missing values")
    out["timestamp"] = to_utc_microseconds(out["timestamp"])
    if "value" in out.columns:
        out["value"] = out["value"].astype("float64")
    return out


def validate_items(df: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise an items frame; fills absent optional columns with their defaults."""
    if "item_id" not in df.columns:
        raise SchemaError(f"items are missing required column 'item_id'; have {list(df.columns)}")
    out = df.copy()
    out["item_id"] = out["item_id"].astype(str)
    dup = out["item_id"].duplicated()
    if dup.any():
        raise SchemaError(f"items.item_id has {int(dup.sum())} duplicates, e.g. {out.loc[dup, 'item_id'].iloc[0]!r}")
    if "text" not in out.columns:
        out["text"] = ""
    out["text"] = out["text"].fillna("").astype(str)
    if "creator_id" not in out.columns:
        out["creator_id"] = None
    out["creator_id"] = out["creator_id"].map(lambda v: None if v is None or pd.isna(v) else str(v))
    if "attributes" not in out.columns:
        out["attributes"] = [[] for _ in range(len(out))]
    out["attributes"] = out["attributes"].map(lambda v: [] if v is None else [str(a) for a in v])
    return out[list(ITEM_COLUMNS)]
