"""Training examples and evaluation inputs with point-in-time LTEs.

Example construction (why it looks like this)
---------------------------------------------
SASRec trains every position of a sequence at once: position ``k`` predicts item ``k + 1``. With
an LTE prefix that is only sound if one LTE is valid for all of them, so an example is a *chunk*
of a user's training history anchored at one target ``j`` (time ``T``):

* ``S`` = the as-of time of the snapshot the point-in-time join returns for ``T`` (the newest
  snapshot at or before ``T``), the LTE = that snapshot (covers events before ``S - lag``);
* inputs = :func:`~models.sequential.features.build_inputs` of the history before ``j`` -- the
  events at or after ``S - lag``, at most ``max_len`` of them (the very function serving uses);
* targets = every input's successor, the anchor ``j`` for the last input and, with a prefix, the
  first input for the prefix token (predicted from the LTE alone).

Every input and every target of a chunk is at or after ``S - lag`` and the LTE is strictly before
it, so no position's target is inside the LTE. Chunks tile the history backwards (the next anchor
is the chunk's first input, or the one before it when the prefix already predicted that input),
so each training event is a target exactly once per epoch. The baseline (no lag boundary) gets
plain SASRec windows of ``max_len``.

The LTE lookup itself (:func:`pit_lte`) goes through the feature store's historical retrieval
(Feast point-in-time join) on a pinned version; this module never reads "the latest" LTE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.sequential.features import build_inputs

if TYPE_CHECKING:
    from feature_store.config import FeatureStoreSettings
    from feature_store.versions import FeatureVersion

US = 1_000_000


@dataclass(frozen=True)
class LagPolicy:
    """Where a version's snapshots are and how far the LTE lags; ``lag_seconds=None`` = no LTE.

    All times are integer microseconds since the epoch, like the offline store, so the snapshot
    an example gets is exactly a stored snapshot time (no float rounding at the boundary).
    """

    lag_us: int | None = None
    as_of_us: int | None = None
    every_us: int | None = None

    @classmethod
    def none(cls) -> LagPolicy:
        return cls()

    @classmethod
    def from_spec(cls, spec: FeatureVersion) -> LagPolicy:
        """The policy of an LTE feature version (from its catalog entry)."""
        w = spec.window
        as_of = pd.Timestamp(w.as_of)
        as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
        every = round(w.snapshot_every_seconds * US) if w.snapshot_every_seconds else None
        as_of_us = int(as_of.value) // 1000  # Timestamp.value is nanoseconds whatever the unit
        return cls(lag_us=round(w.lag_seconds * US), as_of_us=as_of_us, every_us=every)

    @property
    def has_lte(self) -> bool:
        return self.lag_us is not None

    @property
    def lag_seconds(self) -> float | None:
        return None if self.lag_us is None else self.lag_us / US

    def snapshot_us(self, t_sec: np.ndarray) -> np.ndarray:
        """Integer-µs as-of of the newest snapshot at or before each time (unix seconds).

        Snapshots sit at ``as_of - k * every``; times after ``as_of`` get ``as_of``.
        """
        if self.as_of_us is None:
            raise ValueError("no LTE version: no snapshots")
        t_us = np.asarray(t_sec, dtype=np.int64) * US
        if not self.every_us:
            return np.minimum(t_us, self.as_of_us)
        behind = np.maximum(self.as_of_us - t_us, 0)
        k = -(-behind // self.every_us)  # ceil division on int64
        return self.as_of_us - k * self.every_us

    def lte_as_of_seconds(self, t_sec: np.ndarray) -> np.ndarray | None:
        """The ``lte_as_of`` to pass to ``build_inputs`` for examples predicted at ``t_sec``."""
        return None if not self.has_lte else self.snapshot_us(t_sec) / US


@dataclass
class Examples:
    """Model inputs in arrays: ``item_seq`` ``[N, L]``, next item ``target`` ``[N]``, ``lte`` ``[N, D]`` or None.

    ``rows`` / ``times`` say whose and when (split row, unix seconds of the target); ``snapshot_us``
    is the LTE snapshot each row was built against (audits and tests check the lag rule with it).
    """

    item_seq: np.ndarray
    target: np.ndarray
    lte: np.ndarray | None
    rows: np.ndarray
    times: np.ndarray
    snapshot_us: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, idx: np.ndarray) -> Examples:
        return Examples(
            item_seq=self.item_seq[idx],
            target=self.target[idx],
            lte=None if self.lte is None else self.lte[idx],
            rows=self.rows[idx],
            times=self.times[idx],
            snapshot_us=None if self.snapshot_us is None else self.snapshot_us[idx],
        )


def training_chunks(
    sequences: Sequence[np.ndarray],
    timestamps: Sequence[np.ndarray],
    max_len: int,
    policy: LagPolicy,
    prefix: bool,
    max_per_user: int | None = None,
) -> Examples:
    """Tile each training history (item indices + unix seconds) into anchored chunks (module doc).

    ``sequences[i]`` must already be the *training* part of row ``i``. ``max_per_user`` keeps only
    the most recent chunks per user (a quick demo training). ``lte`` is left None: fill it with
    :func:`attach_lte` (point-in-time) before training an LTE variant.
    """
    seqs: list[np.ndarray] = []
    targets: list[int] = []
    rows: list[int] = []
    times: list[int] = []
    snaps: list[int] = []
    first_target = 0 if prefix else 1
    for row, (items, ts) in enumerate(zip(sequences, timestamps, strict=True)):
        j = len(items) - 1
        taken = 0
        while j >= first_target and (max_per_user is None or taken < max_per_user):
            t = int(ts[j])
            snap = int(policy.snapshot_us(np.array([t]))[0]) if policy.has_lte else 0
            as_of = snap / US if policy.has_lte else None
            seq, _ = build_inputs(items[:j], ts[:j], None, None, max_len, as_of, policy.lag_seconds)
            kept = int((seq != 0).sum())
            if kept == 0 and not prefix:
                j -= 1  # nothing to predict from; only reachable with a lag boundary
                continue
            seqs.append(seq)
            targets.append(int(items[j]))
            rows.append(row)
            times.append(t)
            snaps.append(snap)
            taken += 1
            start = j - kept  # first input of this chunk
            j = start - 1 if prefix else start
    n = len(targets)
    return Examples(
        item_seq=np.stack(seqs) if n else np.zeros((0, max_len), dtype=np.int64),
        target=np.asarray(targets, dtype=np.int64),
        lte=None,
        rows=np.asarray(rows, dtype=np.int64),
        times=np.asarray(times, dtype=np.int64),
        snapshot_us=np.asarray(snaps, dtype=np.int64) if policy.has_lte else None,
    )


def query_inputs(
    histories: Sequence[np.ndarray],
    history_ts: Sequence[np.ndarray],
    target_times: np.ndarray,
    targets: np.ndarray,
    max_len: int,
    policy: LagPolicy,
) -> Examples:
    """One evaluation (or serving-like) query per row: the history before its target time.

    ``histories[i]`` is row ``i``'s input history (``split.valid_input`` / ``split.test_input``).
    """
    t = np.asarray(target_times, dtype=np.int64)
    snaps = policy.snapshot_us(t) if policy.has_lte else None
    seqs = []
    for i, (items, ts) in enumerate(zip(histories, history_ts, strict=True)):
        as_of = None if snaps is None else snaps[i] / US
        seq, _ = build_inputs(items, ts, None, None, max_len, as_of, policy.lag_seconds)
        seqs.append(seq)
    return Examples(
        item_seq=np.stack(seqs) if seqs else np.zeros((0, max_len), dtype=np.int64),
        target=np.asarray(targets, dtype=np.int64),
        lte=None,
        rows=np.arange(len(t), dtype=np.int64),
        times=t,
        snapshot_us=snaps,
    )


def pit_lte(
    settings: FeatureStoreSettings,
    ref: str,
    users: np.ndarray,
    snapshot_us: np.ndarray,
    store: object | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point-in-time LTE of each ``(user, snapshot time)`` through Feast: ``(lte [N, D], present [N], n_items [N])``.

    The query time is the snapshot's own as-of (exact µs), which selects the same row as the
    example's target time would, and lets all examples of a user between two snapshots share
    one join row: the join runs on the distinct pairs only. Rows without a snapshot get the
    documented default (zeros, ``present=False``).
    """
    from feature_store import feast_ops  # Feast is slow to import; only data preparation needs it

    keys = pd.DataFrame({"user_id": np.asarray(users).astype(str), "t": np.asarray(snapshot_us, dtype=np.int64)})
    uniq = keys.drop_duplicates(ignore_index=True)
    entity_df = pd.DataFrame(
        {
            "user_id": uniq["user_id"],
            "event_timestamp": pd.to_datetime(uniq["t"].to_numpy(), unit="us", utc=True),
        }
    )
    out = feast_ops.historical_features(settings, entity_df, [ref], store)  # type: ignore[arg-type]
    view_ref = ref.split(":")[0]
    lte = np.stack([np.asarray(v, dtype=np.float32) for v in out[f"{view_ref}:lte"]])
    present = out[f"{view_ref}:present"].to_numpy(dtype=bool)
    n_items = out[f"{view_ref}:n_items"].to_numpy(dtype=np.int64)
    where = keys.merge(uniq.reset_index(), on=["user_id", "t"], how="left")["index"].to_numpy()
    return lte[where], present[where], n_items[where]


def attach_lte(
    examples: Examples,
    settings: FeatureStoreSettings,
    ref: str,
    users: np.ndarray,
    store: object | None = None,
) -> dict[str, float]:
    """Fill ``examples.lte`` from the pinned version ``ref`` (point in time); returns coverage stats.

    ``users`` maps ``examples.rows`` to user ids.
    """
    if examples.snapshot_us is None:
        raise ValueError("examples were built without an LTE policy")
    lte, present, n_items = pit_lte(settings, ref, np.asarray(users)[examples.rows], examples.snapshot_us, store)
    examples.lte = lte
    return {
        "examples": float(len(examples)),
        "lte_present": float(present.mean()) if len(present) else 0.0,
        "lte_items_mean": float(n_items[present].mean()) if present.any() else 0.0,
        "seq_len_mean": float((examples.item_seq != 0).sum(axis=1).mean()) if len(examples) else 0.0,
    }


_EXAMPLE_FIELDS = ("item_seq", "target", "lte", "rows", "times", "snapshot_us")


def save_examples(path: Path, parts: dict[str, Examples], meta: dict[str, Any]) -> None:
    """Named sets of model inputs in one ``.npz`` (written atomically): the cache of the Feast joins."""
    arrays = {
        f"{name}|{f}": getattr(ex, f)
        for name, ex in parts.items()
        for f in _EXAMPLE_FIELDS
        if getattr(ex, f) is not None
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)


def load_examples(path: Path) -> tuple[dict[str, Examples], dict[str, Any]]:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        names = sorted({k.rsplit("|", 1)[0] for k in z.files if "|" in k})
        parts = {n: Examples(**{f: z.get(f"{n}|{f}") for f in _EXAMPLE_FIELDS}) for n in names}  # type: ignore[arg-type]
    return parts, meta
