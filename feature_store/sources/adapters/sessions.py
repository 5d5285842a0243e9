"""Session-based clicks: the YooChoose 100k sample and the Diginetica sample."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from feature_store.sources.adapters._common import Source, build, unix_seconds
from feature_store.sources.loading import BadRowPolicy
from feature_store.sources.schema import Dataset

YOOCHOOSE_FILES = {
    "train": "sessions/yoochoose-100k/yoochoose-clicks-100k_train_full.txt.gz",
    "test": "sessions/yoochoose-100k/yoochoose-clicks-100k_test.txt.gz",
}
# Sessions without a logged-in user are users of their own, named so they cannot collide with user ids.
ANONYMOUS_PREFIX = "session:"


def load_yoochoose(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Clicks with unix-second float times; the session is also the user (YooChoose has no users).

    train_full and test (split on the last day by session-rec) are concatenated;
    ``meta["split"]`` labels each row "train" or "test".
    """
    name = "yoochoose-100k"
    src = Source(root, name, on_bad_rows)
    src.require(*YOOCHOOSE_FILES.values())
    frames = []
    for split, rel in YOOCHOOSE_FILES.items():
        t, c = src.table(rel, ["SessionId", "ItemId", "Time"], sep="\t", quoting=csv.QUOTE_NONE)
        f = t.frame
        c.integer(f["SessionId"], "SessionId")
        c.integer(f["ItemId"], "ItemId")
        seconds = c.number(f["Time"], "Time")
        frame = pd.DataFrame(
            {
                "user_id": f["SessionId"],
                "item_id": f["ItemId"],
                "timestamp": unix_seconds(seconds.to_numpy()),
                "session_id": f["SessionId"],
                "split": split,
            }
        )
        frames.append(src.apply(c, frame))
    inter = pd.concat(frames, ignore_index=True)
    split = inter.pop("split").to_numpy()
    return build(name, inter, None, "unix", src, split=split)


def load_diginetica(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Item views; time = ``eventdate`` (UTC midnight) + ``timeframe`` milliseconds.

    Most sessions are anonymous (user_id "NA"): those get ``user_id`` "session:<session_id>",
    because the numeric user ids and session ids overlap and would otherwise merge strangers.
    Anonymous rows of a session that names exactly one user elsewhere get that user.
    """
    name = "diginetica-sample"
    src = Source(root, name, on_bad_rows)
    rel = "sessions/diginetica-sample/sample_train-item-views.csv.gz"
    src.require(rel)
    t, c = src.table(rel, ["session_id", "user_id", "item_id", "timeframe", "eventdate"], sep=";")
    f = t.frame
    c.integer(f["session_id"], "session_id")
    anonymous = f["user_id"].isin(["NA", ""])
    c.integer(f["user_id"].where(~anonymous, "0"), "user_id")
    c.integer(f["item_id"], "item_id")
    offset_ms = c.integer(f["timeframe"], "timeframe")
    day = c.date(f["eventdate"], "eventdate", "%Y-%m-%d", "expected yyyy-mm-dd")
    # A few sessions log in midway: their anonymous rows belong to that one user. Sessions with two
    # different users keep the rows as logged.
    pairs = f.loc[~anonymous, ["session_id", "user_id"]].drop_duplicates()
    single = pairs[~pairs["session_id"].duplicated(keep=False)]
    session_user = f["session_id"].map(dict(zip(single["session_id"], single["user_id"], strict=True)))
    fallback = session_user.fillna(ANONYMOUS_PREFIX + f["session_id"])
    inter = pd.DataFrame(
        {
            "user_id": f["user_id"].where(~anonymous, fallback),
            "item_id": f["item_id"],
            "timestamp": day + pd.to_timedelta(offset_ms, unit="ms"),
            "session_id": f["session_id"],
        }
    )
    inter = src.apply(c, inter)
    return build(name, inter, None, "unix", src, anonymous_user_prefix=ANONYMOUS_PREFIX)
