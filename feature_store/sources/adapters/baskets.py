"""Next-basket data: Kaggle Groceries (dated baskets) and Ta-Feng (ordered baskets, no dates)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.sources.adapters._common import Source, build, day_steps
from feature_store.sources.loading import BadRowPolicy, MalformedRowError
from feature_store.sources.schema import Dataset


def load_groceries(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """One row per purchased item line; a basket is one member's purchases on one date.

    The item description is the only item identifier, so it is both ``item_id`` and ``text``.
    Dates have no time of day: every line of a basket gets that day's UTC midnight. Value is 1
    per line; repeated lines (same item twice in a basket) are kept, they are quantity.
    """
    name = "groceries"
    src = Source(root, name, on_bad_rows)
    rel = "groceries/Groceries_dataset.csv.gz"
    src.require(rel)
    t, c = src.table(rel, ["Member_number", "Date", "itemDescription"])
    f = t.frame
    c.integer(f["Member_number"], "Member_number")
    day = c.date(f["Date"], "Date", "%d-%m-%Y", "expected dd-mm-yyyy")
    c.nonempty(f["itemDescription"], "itemDescription")
    member = f["Member_number"]
    inter = pd.DataFrame(
        {
            "user_id": member,
            "item_id": f["itemDescription"],
            "timestamp": day,
            "basket_id": member + ":" + day.dt.strftime("%Y-%m-%d").fillna(""),
            "value": 1.0,
        }
    )
    inter = src.apply(c, inter)
    descriptions = pd.unique(inter["item_id"])
    items = pd.DataFrame({"item_id": descriptions, "text": descriptions})
    return build(name, inter, items, "unix", src)


def load_tafeng(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """``{user: [[item, ...], ...]}`` with baskets in time order but no dates.

    Basket k of a user (0-based) is day k and gets ``basket_id`` "<user>:<k>"; the cadence is in
    basket steps, not days. The last basket of each user is the "future" basket of the
    reality-check protocol: ``meta["split"]`` says "history" or "future" per interaction row.
    """
    name = "tafeng"
    src = Source(root, name, on_bad_rows)
    rel = "tafeng/tafeng_merged.json.gz"
    (path,) = src.require(rel)
    display = src.display(path)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise MalformedRowError(display, exc.lineno, f"invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise MalformedRowError(display, 1, "expected a JSON object {user: [[item, ...], ...]}")

    # One checked unit per basket; a user whose value is not a list counts as one bad unit.
    users: list[str] = []
    steps: list[int] = []
    baskets: list[object] = []
    last: list[bool] = []
    for user, seq in doc.items():
        if not isinstance(seq, list):
            users.append(user)
            steps.append(-1)
            baskets.append(seq)
            last.append(False)
            continue
        for k, basket in enumerate(seq):
            users.append(user)
            steps.append(k)
            baskets.append(basket)
            last.append(k == len(seq) - 1)
    ok = np.array(
        [
            isinstance(b, list) and len(b) > 0 and all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in b)
            for b in baskets
        ],
        dtype=bool,
    )

    def locate(i: int) -> str:
        return f"user {users[i]!r}" + (f" basket {steps[i]}" if steps[i] >= 0 else "")

    def reason(i: int) -> str:
        if steps[i] < 0:
            return f"baskets should be a list of lists, got {str(baskets[i])[:60]}"
        b = baskets[i]
        return "basket is empty" if b == [] else f"basket should be a list of item ids, got {str(b)[:60]}"

    c = src.checks(rel, len(baskets), locate=locate)
    c.flag(~ok, reason)
    units = src.apply(c, pd.DataFrame({"user": users, "step": steps, "basket": baskets, "last": last}))

    sizes = units["basket"].map(len).to_numpy(dtype=np.int64)
    user_col = np.repeat(units["user"].to_numpy(dtype=object), sizes)
    step_col = np.repeat(units["step"].to_numpy(dtype=np.int64), sizes)
    items = np.array([str(i) for b in units["basket"] for i in b], dtype=object)
    inter = pd.DataFrame(
        {
            "user_id": user_col,
            "item_id": items,
            "timestamp": day_steps(step_col),
            "basket_id": np.repeat(
                np.array([f"{u}:{k}" for u, k in zip(units["user"], units["step"], strict=True)], dtype=object), sizes
            ),
        }
    )
    split = np.where(np.repeat(units["last"].to_numpy(dtype=bool), sizes), "future", "history")
    return build(name, inter, None, "day_index", src, split=split)
