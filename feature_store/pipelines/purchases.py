"""The ``purchase_history`` feature view: each user's purchase days per item, as point-in-time snapshots.

What a row holds
----------------
One row per ``(user, snapshot T)`` for every user with at least one purchase strictly before
``T``: two aligned lists, oldest first (ties: item id order),

* ``item_ids`` (string_list): the item bought;
* ``days`` (int64_list): the UTC **day number** it was bought on: whole days since 1970-01-01
  (``models.basket.features.day_number``; the same numbering CASE's purchase-day matrix uses).
  Order-only datasets (Ta-Feng) carry the synthetic day index of
  ``feature_store/sources/schema.py`` (basket k of a user on ``DAY_INDEX_EPOCH + k``), so there a
  "day" is a basket step.

A pair appears once however many lines of it the day has (a basket is a set; quantity is not a
purchase day). ``event_timestamp`` = ``created_timestamp`` = ``T``.

What is kept ("capped per the model's needs")
---------------------------------------------
CASE reads, for an as-of day ``A``, the purchase days in ``[A - 364, A - 1]`` of the user's
candidate items, and its candidates are the items bought before ``A`` (most recent first, at most
1,024). The *reference day* of a snapshot is :func:`snapshot_day` ``(T)``, the day after the last
day the snapshot has data for. Kept, per user:

1. every pair with ``day >= reference day - history_days`` (default 728 = 2 x 364, so a request
   for any as-of day down to ``reference - 364`` sees its full 364-day window: the service may
   answer "as of a past day" exactly, without leaking later purchases);
2. for every item bought only before that, its **last** purchase day, so it stays a repeat
   candidate with the right recency (its older days are outside every window the service accepts);
3. at most ``max_pairs`` (default 4,096) pairs, the most recent ones (ties: lower item id first).

Newly arrived purchases
-----------------------
:func:`record_purchases` merges new purchases into the *online* value of each affected user at one
version (read with our online reader, merge, write back through Feast's ``write_to_online_store``)
and first appends them to an append-only log under the data dir
(:func:`purchase_log_path`), which the next version build (``feature_store.build.build_purchase_history``)
reads, so nothing recorded between builds is lost. A merge keeps rule 3 (``max_pairs``) only: it
never drops a pair because the reference day moved, so answers for past as-of days stay exact.
The offline parquet of a version is immutable; only the next version contains recorded purchases
offline. Re-materializing the same version would put its snapshot value back online (on SQLite;
Redis keeps the newer recorded row): build a new version instead.

Cost: one sort of the distinct pairs, then per snapshot a vectorised pass over them (a prefix per
(user, item) group is "before T"), so O(snapshots x pairs) without Python loops per user.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from feature_store.config import FeatureStoreSettings
from feature_store.pipelines.lte import as_of_us, timestamps_us, track, us_to_utc
from feature_store.pipelines.recent import split_lists
from feature_store.versions import FeatureField, FeatureStoreError, VersionCatalog, parse_ref

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

VIEW = "purchase_history"
PURCHASE_FIELDS = [
    FeatureField(name="item_ids", dtype="string_list"),
    FeatureField(name="days", dtype="int64_list"),
]
PURCHASE_COLUMNS = ("user_id", "event_timestamp", "created_timestamp", "item_ids", "days")
HORIZON_DAYS = 364  # CASE's window (models.basket.features.HORIZON_DAYS); kept here so builds need no torch
HISTORY_DAYS = 2 * HORIZON_DAYS
MAX_PAIRS = 4096
DAY_EPOCH = "1970-01-01"
_US_PER_DAY = 86_400_000_000
# The synthetic generator's shopping trips (grocery users) are the baskets ``<user>:d<day>``; its
# other "baskets" are browsing sessions (``<user>:s<k>``), which are not purchases.
SYNTHETIC_TRIP_PATTERN = r":d\d+$"


def default_basket_pattern(dataset: str) -> str | None:
    """Which ``basket_id`` values are purchases: shopping trips on synthetic data, every basket elsewhere."""
    return SYNTHETIC_TRIP_PATTERN if dataset == "synthetic" else None


def day_of_us(us: np.ndarray | int) -> np.ndarray:
    """UTC day number of int64 microsecond timestamps (floor division: days before 1970 stay correct)."""
    return np.floor_divide(np.asarray(us, dtype=np.int64), _US_PER_DAY)


def snapshot_day(as_of: pd.Timestamp | datetime | str) -> int:
    """The day after the last day a snapshot taken at ``as_of`` has data for: ``day(as_of - 1 us) + 1``.

    A snapshot at midnight of day D+1 knows all of day D, so its reference day is D+1; one taken at
    23:46 on day D (the demo: last event + 1 s) knows day D up to then and also gets D+1.
    """
    t = pd.Timestamp(as_of)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(day_of_us(_us(t) - 1)) + 1


def _us(ts: pd.Timestamp | datetime) -> int:
    """Microseconds since the epoch (``Timestamp.value`` is nanoseconds whatever the unit)."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t
    return int(t.as_unit("ns").value // 1000)


def day_start(day: int) -> pd.Timestamp:
    """UTC midnight of a day number."""
    return pd.Timestamp(int(day) * _US_PER_DAY, unit="us", tz="UTC")


@dataclass
class PurchasePairs:
    """Distinct (user, item, day) purchases, sorted by (user, item, first purchase time)."""

    user_ids: np.ndarray  # object, sorted; codes index into it
    item_ids: np.ndarray  # object, sorted (so code order is item id order)
    user: np.ndarray  # int64 codes
    item: np.ndarray  # int64 codes
    day: np.ndarray  # int64 day numbers
    first_us: np.ndarray  # int64: time of the pair's first line (decides "before T")

    def __len__(self) -> int:
        return len(self.user)


def purchases(interactions: pd.DataFrame, basket_pattern: str | None = None) -> pd.DataFrame:
    """The purchase lines of canonical interactions: all of them, or those whose basket_id matches."""
    if basket_pattern is None:
        return interactions
    if "basket_id" not in interactions.columns:
        raise FeatureStoreError("a basket_pattern needs a basket_id column")
    keep = interactions["basket_id"].astype(str).str.contains(basket_pattern, regex=True, na=False)
    return interactions[keep.to_numpy()]


def purchase_pairs(interactions: pd.DataFrame) -> PurchasePairs:
    """Distinct (user, item, day) pairs of purchase lines (``user_id``, ``item_id``, ``timestamp``)."""
    ts = timestamps_us(interactions["timestamp"])
    user, user_ids = pd.factorize(interactions["user_id"].astype(str), sort=True)
    item, item_ids = pd.factorize(interactions["item_id"].astype(str), sort=True)
    user, item = user.astype(np.int64), item.astype(np.int64)
    day = day_of_us(ts)
    # Sort by (user, item, time); the first line of each (user, item, day) is the pair.
    order = np.lexsort((ts, item, user))
    user, item, day, ts = user[order], item[order], day[order], ts[order]
    first = np.ones(len(user), dtype=bool)
    first[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1]) | (day[1:] != day[:-1])
    return PurchasePairs(
        user_ids=np.asarray(user_ids, dtype=object),
        item_ids=np.asarray(item_ids, dtype=object),
        user=user[first],
        item=item[first],
        day=day[first],
        first_us=ts[first],
    )


def _empty_frame() -> pd.DataFrame:
    ts = us_to_utc(np.zeros(0, dtype=np.int64))
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=object),
            "event_timestamp": ts,
            "created_timestamp": ts.copy(),
            "item_ids": pd.Series([], dtype=object),
            "days": pd.Series([], dtype=object),
        }
    )


def _kept_at(pairs: PurchasePairs, t_us: int, history_days: int, max_pairs: int) -> np.ndarray:
    """Indices of the pairs one snapshot at ``t_us`` keeps (the module's rules 1-3), sorted (user, day, item)."""
    before = pairs.first_us < t_us
    same_group_next = np.zeros(len(pairs), dtype=bool)
    same_group_next[:-1] = (pairs.user[1:] == pairs.user[:-1]) & (pairs.item[1:] == pairs.item[:-1])
    next_before = np.zeros(len(pairs), dtype=bool)
    next_before[:-1] = before[1:]
    # Within a (user, item) group the pairs are in time order, so "before T" is a prefix of it.
    is_last = before & ~(same_group_next & next_before)
    start_day = snapshot_day(pd.Timestamp(int(t_us), unit="us", tz="UTC")) - history_days
    idx = np.flatnonzero(before & ((pairs.day >= start_day) | is_last))
    if not len(idx):
        return idx
    counts = np.bincount(pairs.user[idx], minlength=len(pairs.user_ids))
    if counts.max() > max_pairs:
        # Newest first per user (ties: lower item id first), then keep the first max_pairs.
        by_recency = idx[np.lexsort((pairs.item[idx], -pairs.day[idx], pairs.user[idx]))]
        u = pairs.user[by_recency]
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        rank = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
        idx = by_recency[rank < max_pairs]
    return idx[np.lexsort((pairs.item[idx], pairs.day[idx], pairs.user[idx]))]


def compute_purchase_history(
    interactions: pd.DataFrame,
    as_of: Sequence[pd.Timestamp],
    history_days: int = HISTORY_DAYS,
    max_pairs: int = MAX_PAIRS,
    show_progress: bool = True,
) -> pd.DataFrame:
    """The view's frame (columns :data:`PURCHASE_COLUMNS`) from purchase lines, one snapshot per ``as_of``.

    ``interactions`` are purchase lines only (filter with :func:`purchases`); see the module
    docstring for what a row keeps.
    """
    if history_days < HORIZON_DAYS:
        raise ValueError(f"history_days must be >= the model horizon ({HORIZON_DAYS}), got {history_days}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    times = as_of_us(as_of)
    if len(interactions) == 0 or len(times) == 0:
        return _empty_frame()
    pairs = purchase_pairs(interactions)
    parts: list[tuple[np.ndarray, int]] = []
    for t_us in track(times, len(times), "purchase history snapshots", show_progress):
        idx = _kept_at(pairs, int(t_us), history_days, max_pairs)
        if len(idx):
            parts.append((idx, int(t_us)))
    if not parts:
        return _empty_frame()
    users_parts, len_parts, t_parts = [], [], []
    for idx, t_us in parts:
        u = pairs.user[idx]
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        users_parts.append(u[starts])
        len_parts.append(np.diff(np.r_[starts, len(u)]))
        t_parts.append(np.full(len(starts), t_us, dtype=np.int64))
    idx_all = np.concatenate([p[0] for p in parts])
    lengths = np.concatenate(len_parts)
    event_ts = us_to_utc(np.concatenate(t_parts))
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(pairs.user_ids[np.concatenate(users_parts)], dtype=object),
            "event_timestamp": event_ts,
            "created_timestamp": event_ts.copy(),
            "item_ids": pd.Series(split_lists(pairs.item_ids[pairs.item[idx_all]], lengths), dtype=object),
            "days": pd.Series(split_lists(pairs.day[idx_all], lengths), dtype=object),
        }
    )
    return frame[list(PURCHASE_COLUMNS)]


def latest_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each user's newest snapshot row (what materialization puts online)."""
    if frame.empty:
        return frame
    idx = frame.groupby("user_id", sort=False)["event_timestamp"].idxmax()
    return frame.loc[idx.to_numpy()].sort_values("user_id", kind="stable").reset_index(drop=True)


def merge_history(
    item_ids: Sequence[str],
    days: Sequence[int],
    new_item_ids: Sequence[str],
    new_days: Sequence[int],
    max_pairs: int = MAX_PAIRS,
) -> tuple[list[str], list[int]]:
    """Union of two histories as distinct (item, day) pairs, oldest first (ties: item id), newest ``max_pairs``."""
    pairs = {(int(d), str(i)) for i, d in zip(item_ids, days, strict=True)}
    pairs.update((int(d), str(i)) for i, d in zip(new_item_ids, new_days, strict=True))
    # The same cap rule as a build: newest first, ties by lower item id, keep max_pairs.
    kept = sorted(pairs, key=lambda p: (-p[0], p[1]))[:max_pairs]
    kept.sort()
    return [i for _, i in kept], [d for d, _ in kept]


# --------------------------------------------------------------------------- newly arrived purchases


def purchase_log_path(settings: FeatureStoreSettings, dataset: str) -> Path:
    """The append-only log of recorded purchases of ``dataset`` (JSON lines)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", dataset):
        raise FeatureStoreError(f"bad dataset name {dataset!r}")
    return settings.data_dir / "purchase_log" / f"{dataset}.jsonl"


def read_purchase_log(settings: FeatureStoreSettings, dataset: str) -> pd.DataFrame:
    """Recorded purchases of ``dataset`` as canonical interactions (``user_id``, ``item_id``, ``timestamp``)."""
    path = purchase_log_path(settings, dataset)
    rows: list[dict[str, Any]] = []
    if path.exists():
        with path.open() as fh:
            for line in fh:
                line = line.strip()
                if line:
                    rows.append(json.loads(line))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    return frame


def events_frame(events: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Validate purchase events: ``user_id``, ``item_id`` and ``timestamp`` (ISO text or datetime; naive = UTC)."""
    frame = events.copy() if isinstance(events, pd.DataFrame) else pd.DataFrame(list(events))
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in frame.columns]
    if missing:
        raise FeatureStoreError(f"purchase events need columns user_id, item_id, timestamp; missing {missing}")
    if frame.empty:
        raise FeatureStoreError("no purchase events")
    if frame[["user_id", "item_id", "timestamp"]].isna().any().any():
        raise FeatureStoreError("purchase events must not have empty user_id, item_id or timestamp")
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    if (frame["user_id"] == "").any() or (frame["item_id"] == "").any():
        raise FeatureStoreError("purchase events must not have empty user_id or item_id")
    try:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype(
            "datetime64[us, UTC]"
        )
    except (ValueError, TypeError) as exc:
        raise FeatureStoreError(f"bad purchase timestamp: {exc}") from exc
    return frame[["user_id", "item_id", "timestamp"]].reset_index(drop=True)


@dataclass
class RecordResult:
    """What :func:`record_purchases` did."""

    ref: str
    events: int
    users: int
    new_users: int
    pairs_added: int
    log_path: str

    def to_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "events": self.events,
            "users": self.users,
            "new_users": self.new_users,
            "pairs_added": self.pairs_added,
            "log_path": self.log_path,
        }


def record_purchases(
    settings: FeatureStoreSettings,
    ref: str,
    events: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    store: FeatureStore | None = None,
    now: datetime | None = None,
) -> RecordResult:
    """Merge newly arrived purchases into the online value of ``ref`` (a ``purchase_history`` version).

    1. The events are appended to the dataset's purchase log first (write-ahead: if the online
       write then fails, the next version build still has them);
    2. each affected user's current online value is read with the project's online reader
       (a user the version does not know starts empty), merged (:func:`merge_history`);
    3. the merged rows are written back through Feast's ``write_to_online_store`` with
       ``event_timestamp`` = now, newer than the row it replaces (Feast's Redis store ignores
       writes that are not newer).

    Writers on one machine are serialised by an exclusive lock on the log file, so two concurrent
    calls never lose each other's purchases in the read-merge-write.
    """
    from feature_store import feast_ops
    from feature_store.online import make_client

    view, num, _ = parse_ref(ref)
    if view != VIEW:
        raise FeatureStoreError(f"record_purchases writes the {VIEW} view, not {ref}")
    catalog = VersionCatalog(settings.catalog_dir)
    spec = catalog.get(view, num)
    state = catalog.status(view, num).state
    if state != "online":
        raise FeatureStoreError(f"{spec.ref} is {state}, not online; materialize it first")
    frame = events_frame(events)
    max_pairs = int(spec.params.get("max_pairs") or MAX_PAIRS)
    now = now or datetime.now(UTC)
    log_path = purchase_log_path(settings, spec.dataset)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    recorded_at = now.isoformat()
    lines = "".join(
        json.dumps(
            {
                "user_id": u,
                "item_id": i,
                "timestamp": t.isoformat(),
                "recorded_at": recorded_at,
                "ref": spec.ref,
            }
        )
        + "\n"
        for u, i, t in zip(frame["user_id"], frame["item_id"], frame["timestamp"], strict=True)
    )
    days = day_of_us(timestamps_us(frame["timestamp"]))
    users = list(dict.fromkeys(frame["user_id"].tolist()))
    with log_path.open("a") as log_fh:
        fcntl.flock(log_fh.fileno(), fcntl.LOCK_EX)  # released when the file closes
        log_fh.write(lines)
        log_fh.flush()
        client = make_client(settings)
        try:
            current = client.read(spec.ref, users)
        finally:
            client.close()
        by_user: dict[str, tuple[list[str], list[int]]] = {u: ([], []) for u in users}
        for u, i, d in zip(frame["user_id"].tolist(), frame["item_id"].tolist(), days.tolist(), strict=True):
            by_user[u][0].append(i)
            by_user[u][1].append(int(d))
        out_items, out_days, out_ts = [], [], []
        added = 0
        now_us = _us(now)
        for r, u in enumerate(users):
            old_items = list(current.values["item_ids"][r])  # type: ignore[index]
            old_days = [int(d) for d in current.values["days"][r]]  # type: ignore[index]
            items, merged_days = merge_history(old_items, old_days, *by_user[u], max_pairs=max_pairs)
            added += len(set(zip(items, merged_days, strict=True)) - set(zip(old_items, old_days, strict=True)))
            out_items.append(items)
            out_days.append(merged_days)
            prev = current.event_ts[r]
            prev_us = _us(prev) if prev is not None else 0
            out_ts.append(max(now_us, prev_us + 1))
        event_ts = us_to_utc(np.asarray(out_ts, dtype=np.int64))
        df = pd.DataFrame(
            {
                spec.join_key: users,
                "item_ids": out_items,
                "days": out_days,
                "event_timestamp": event_ts,
                "created_timestamp": event_ts.copy(),
            }
        )
        store = store or feast_ops.get_store(settings)
        store.write_to_online_store(spec.feast_name, df=df)
    new_users = int((~current.present).sum())
    log.info("recorded %d purchases of %d users into %s (%d new pairs)", len(frame), len(users), spec.ref, added)
    return RecordResult(
        ref=spec.ref,
        events=len(frame),
        users=len(users),
        new_users=new_users,
        pairs_added=added,
        log_path=str(log_path),
    )
