"""CTR-style data: Frappe (libFM one-hot, 10 fields) and the Criteo head sample (13 numeric + 26 categorical)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.sources.adapters._common import Source, build, day_index
from feature_store.sources.loading import BadRowPolicy, RowChecks
from feature_store.sources.schema import Dataset

FRAPPE_FIELDS = 10
FRAPPE_FILES = {"train": "frappe/frappe.validation.libfm.gz", "test": "frappe/frappe.test.libfm.gz"}


def infer_field_ranges(ids: np.ndarray) -> list[tuple[int, int]]:
    """Feature-id range of each one-hot field, from rows whose ids are sorted (one id per field).

    Every row holds exactly one feature per field and the fields own contiguous, increasing id
    ranges, so the j-th smallest id of a row belongs to field j. Field j then starts at the
    smallest id ever seen in position j and ends just before field j+1 starts (the last field ends
    at the largest id seen). Ids a field owns but nobody used stay inside its range.
    """
    if ids.ndim != 2 or ids.shape[0] == 0:
        raise ValueError("need a non-empty (rows, fields) id matrix")
    starts = ids.min(axis=0)
    ends = np.append(starts[1:] - 1, ids[:, -1].max())
    maxes = ids.max(axis=0)
    if (np.diff(starts) <= 0).any() or (maxes > ends).any():
        raise ValueError(
            f"feature ids do not split into contiguous per-field ranges: starts {starts.tolist()}, "
            f"largest per position {maxes.tolist()}"
        )
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _read_libfm(src: Source, rel: str) -> tuple[pd.DataFrame, RowChecks, np.ndarray]:
    """Label and the 10 feature ids of each line; malformed lines are flagged, not yet dropped."""
    t, c = src.table(rel, ["label", *[f"f{j}" for j in range(FRAPPE_FIELDS)]], sep=" ", header=False)
    f = t.frame
    c.one_of(f["label"], "label", ["1", "-1"])
    ids = np.full((len(f), FRAPPE_FIELDS), -1, dtype=np.int64)
    for j in range(FRAPPE_FIELDS):
        col = f[f"f{j}"]
        # One-hot features read "<id>:1"; cheaper than a regex on ~600k tokens.
        head = col.str.slice(stop=-2)
        ok = (col.str.endswith(":1") & head.str.isdecimal()).to_numpy(dtype=bool)

        def reason(i: int, col: pd.Series = col) -> str:
            v = col.iloc[i]
            return f"expected {FRAPPE_FIELDS} features, found fewer" if v == "" else f"feature {v!r} is not '<id>:1'"

        c.flag(~ok, reason)
        ids[ok, j] = head[ok].astype("int64").to_numpy()
    c.flag(~c.bad & (np.diff(ids, axis=1) <= 0).any(axis=1), lambda i: "feature ids are not in increasing order")
    return f, c, ids


def load_frappe(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Frappe app usage as libFM one-hot rows: label +1/-1 becomes value 1/0.

    Field 0 is the user, field 1 the item (app), fields 2..9 are context, stored as
    ``context_<field>`` = the 0-based position of the feature inside its field's id range. The id
    ranges are inferred from both files (see infer_field_ranges) and returned in
    ``meta["field_ranges"]``. User and item ids are the raw libFM feature ids. There is no time: the
    k-th row of a user (validation file first, then test) is day k. The validation file is the
    train split (the NFM train file is not available), so ``meta["split"]`` is "train"/"test".
    """
    name = "frappe"
    src = Source(root, name, on_bad_rows)
    src.require(*FRAPPE_FILES.values())
    parsed = {split: _read_libfm(src, rel) for split, rel in FRAPPE_FILES.items()}
    # Inferred from the well-formed rows of both files; a row that breaks the layout makes this raise.
    ranges = infer_field_ranges(np.concatenate([ids[~c.bad] for _, c, ids in parsed.values()]))
    lo = np.array([r[0] for r in ranges])

    frames = []
    for split, (f, c, ids) in parsed.items():
        frame = pd.DataFrame(
            {
                "user_id": ids[:, 0].astype(str),
                "item_id": ids[:, 1].astype(str),
                "value": (f["label"] == "1").astype("float64"),
                **{f"context_{j}": ids[:, j] - lo[j] for j in range(2, FRAPPE_FIELDS)},
                "split": split,
            }
        )
        frames.append(src.apply(c, frame))
    inter = pd.concat(frames, ignore_index=True)
    split = inter.pop("split").to_numpy()
    inter.insert(2, "timestamp", day_index(inter["user_id"]))
    field_ranges = {("user" if j == 0 else "item" if j == 1 else f"context_{j}"): r for j, r in enumerate(ranges)}
    return build(name, inter, None, "day_index", src, split=split, field_ranges=field_ranges)


CRITEO_NUMERIC = [f"I{i}" for i in range(1, 14)]
CRITEO_CATEGORICAL = [f"C{i}" for i in range(1, 27)]
CRITEO_ITEM = "criteo-ad"


def load_criteo(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Criteo display-ad head sample, only to prove the 13 + 26 field format loads end to end.

    Criteo has no user or item ids. Each row is its own "user" (``user_id`` = the row Id) who saw
    one generic item ``"criteo-ad"``; the click label is ``value``. I1..I13 become integer
    ``context_I<n>`` (nullable), C1..C26 text ``context_C<n>`` (None when empty). No time: every
    row is the first and only event of its user, so all sit on day 0; row order is Id order.
    """
    name = "criteo"
    src = Source(root, name, on_bad_rows)
    rel = "criteo/train_tiny.csv.gz"
    src.require(rel)
    t, c = src.table(rel, ["Id", "Label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL])
    f = t.frame
    c.integer(f["Id"], "Id")
    c.unique(f["Id"], "Id")
    c.one_of(f["Label"], "Label", ["0", "1"])
    data: dict[str, object] = {
        "user_id": f["Id"],
        "item_id": CRITEO_ITEM,
        "timestamp": day_index(f["Id"]),
        "value": (f["Label"] == "1").astype("float64"),
    }
    for col in CRITEO_NUMERIC:
        data[f"context_{col}"] = c.integer(f[col], col, allow_empty=True)
    for col in CRITEO_CATEGORICAL:
        data[f"context_{col}"] = f[col].where(f[col].ne(""), None)
    inter = src.apply(c, pd.DataFrame(data))
    return build(name, inter, None, "day_index", src)
