"""Amazon reviews: S3-Rec sequences (Beauty, Sports), Musical Instruments 5-core, DisenCDR cross-domain pairs."""

from __future__ import annotations

import gzip
import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.sources.adapters._common import DatasetLoader, Source, build, day_index, day_steps, unix_seconds
from feature_store.sources.loading import BadRowPolicy, MalformedRowError
from feature_store.sources.schema import Dataset

S3REC_CATEGORIES = {"amazon-beauty": "Beauty", "amazon-sports": "Sports_and_Outdoors"}
# Cross-domain pairs: folder <A>_<B> holds domain A's interactions of the (A, B) pair.
CDR_PAIRS = ("sport_cloth", "cloth_sport", "electronic_phone", "phone_electronic")


def load_s3rec(root: Path, on_bad_rows: BadRowPolicy = "error", *, name: str = "amazon-beauty") -> Dataset:
    """One line per user, items in time order, no dates: the k-th item of a user is day k.

    Items carry their S3-Rec attribute ids as "attr:<id>" tokens. The ids mix categories and brand
    and nothing says which is which, so ``creator_id`` stays None.
    """
    category = S3REC_CATEGORIES[name]
    src = Source(root, name, on_bad_rows)
    seq_file, attr_file = f"amazon/s3rec/{category}.txt.gz", f"amazon/s3rec/{category}_item2attributes.json.gz"
    src.require(seq_file, attr_file)

    lines = pd.Series(src.lines(seq_file), dtype=object)
    line_no = np.arange(1, len(lines) + 1, dtype=np.int64)
    blank = lines.str.strip().eq("").to_numpy()
    lines, line_no = lines[~blank].reset_index(drop=True), line_no[~blank]
    c = src.checks(seq_file, len(lines), lines=line_no)
    c.matches(lines, "line", r"\s*\d+(?:\s+\d+)+\s*", "'user item item ...' with integer ids")
    users = lines.str.split(n=1).str[0].fillna("")
    c.unique(users, "user")
    kept = src.apply(c, pd.DataFrame({"line": lines}))["line"]

    tokens = [line.split() for line in kept]
    counts = np.fromiter((len(t) - 1 for t in tokens), dtype=np.int64, count=len(tokens))
    user_ids = np.repeat(np.array([t[0] for t in tokens], dtype=object), counts)
    item_ids = np.array([i for t in tokens for i in t[1:]], dtype=object)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    steps = np.arange(len(item_ids), dtype=np.int64) - starts
    inter = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "timestamp": day_steps(steps)})

    items = _s3rec_attributes(src, attr_file)
    return build(name, inter, items, "day_index", src, category=category)


def _s3rec_attributes(src: Source, rel: str) -> pd.DataFrame:
    """``{item: [attribute id, ...]}`` -> items with "attr:<id>" tokens; malformed entries follow the policy."""
    with gzip.open(src.root / rel, "rt", encoding="utf-8") as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise MalformedRowError(src.display(src.root / rel), exc.lineno, f"invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise MalformedRowError(src.display(src.root / rel), 1, "expected a JSON object {item: [attribute ids]}")
    keys = list(doc)
    values = [doc[k] for k in keys]
    ok = np.array(
        [isinstance(v, list) and all(isinstance(a, int) and not isinstance(a, bool) for a in v) for v in values],
        dtype=bool,
    )
    c = src.checks(rel, len(keys), locate=lambda i: f"item {keys[i]!r}")
    c.flag(~ok, lambda i: f"attributes should be a list of integer ids, got {str(values[i])[:60]}")
    frame = src.apply(c, pd.DataFrame({"item_id": keys, "attributes": values}))
    frame["attributes"] = [[f"attr:{a}" for a in v] for v in frame["attributes"]]
    return frame


_REVIEW_FIELDS = (
    ("reviewerID", str, "text"),
    ("asin", str, "text"),
    ("overall", (int, float), "a number"),
    ("unixReviewTime", int, "an integer"),
)


def _parse_review(line: str) -> tuple[tuple[str, str, int, float, str, str, str | None], str | None]:
    """One JSON line -> (user, item, seconds, rating, summary, text, reviewer name), or a reason it is bad."""
    empty = ("", "", 0, 0.0, "", "", None)
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        return empty, f"invalid JSON ({exc.msg})"
    if not isinstance(rec, dict):
        return empty, "expected a JSON object"
    for key, kind, expected in _REVIEW_FIELDS:
        v = rec.get(key)
        if v is None or v == "":
            return empty, f"{key} is missing"
        if not isinstance(v, kind) or isinstance(v, bool):
            return empty, f"{key} {str(v)[:40]!r} is not {expected}"
    return (
        rec["reviewerID"],
        rec["asin"],
        rec["unixReviewTime"],
        float(rec["overall"]),
        str(rec.get("summary") or ""),
        str(rec.get("reviewText") or ""),
        rec.get("reviewerName"),
    ), None


def load_musical_instruments(root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset:
    """Musical Instruments 5-core reviews: real reviewer ids, star ratings, review-day unix times.

    Items have no titles in this file, so their text is "". The review texts are kept out of the
    interactions (they are not request context) and returned in ``meta["reviews"]``, row-aligned.
    """
    name = "amazon-musical-instruments"
    src = Source(root, name, on_bad_rows)
    rel = "amazon/musical_instruments_5core/Musical_Instruments_5.json.gz"
    src.require(rel)
    rows, problems, line_no = [], [], []
    for n, line in enumerate(src.lines(rel), start=1):
        if line.strip():
            row, why = _parse_review(line)
            rows.append(row)
            problems.append(why)
            line_no.append(n)
    c = src.checks(rel, len(rows), lines=np.array(line_no, dtype=np.int64))
    c.flag(np.array([p is not None for p in problems], dtype=bool), lambda i: str(problems[i]))
    columns = ["user_id", "item_id", "seconds", "value", "summary", "review_text", "reviewer_name"]
    frame = src.apply(c, pd.DataFrame(rows, columns=columns))
    inter = pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "item_id": frame["item_id"],
            "timestamp": unix_seconds(frame["seconds"].to_numpy(dtype=np.int64)),
            "value": frame["value"].astype("float64"),
        }
    )
    reviews = frame[["summary", "review_text", "reviewer_name"]]
    return build(name, inter, None, "unix", src, reviews=reviews)


def load_cdr(root: Path, on_bad_rows: BadRowPolicy = "error", *, pair: str = "sport_cloth") -> Dataset:
    """One domain of a DisenCDR cross-domain pair: train then test rows, order only.

    ``user item 1`` lines; users are shared with the partner folder <B>_<A>, items are per domain.
    The k-th row of a user (train rows first, then test) is day k. ``meta["split"]`` labels rows.
    """
    domain, other = pair.split("_")
    name = f"cdr-{domain}-{other}"
    src = Source(root, name, on_bad_rows)
    files = {split: f"amazon/cdr/{pair}/{split}.txt.gz" for split in ("train", "test")}
    src.require(*files.values())
    frames = []
    for split, rel in files.items():
        t, c = src.table(rel, ["user", "item", "label"], sep="\t", header=False)
        f = t.frame
        c.integer(f["user"], "user")
        c.integer(f["item"], "item")
        value = c.number(f["label"], "label")
        frames.append(
            src.apply(c, pd.DataFrame({"user_id": f["user"], "item_id": f["item"], "value": value, "split": split}))
        )
    inter = pd.concat(frames, ignore_index=True)
    split = inter.pop("split").to_numpy()
    inter["timestamp"] = day_index(inter["user_id"])
    return build(
        name,
        inter,
        None,
        "day_index",
        src,
        split=split,
        domain=domain,
        other_domain=other,
        partner_dataset=f"cdr-{other}-{domain}",
    )


def cdr_loaders() -> dict[str, DatasetLoader]:
    """Registry entries for the four cross-domain folders."""
    out: dict[str, DatasetLoader] = {}
    for pair in CDR_PAIRS:
        domain, other = pair.split("_")
        out[f"cdr-{domain}-{other}"] = partial(load_cdr, pair=pair)
    return out


def s3rec_loaders() -> dict[str, DatasetLoader]:
    return {name: partial(load_s3rec, name=name) for name in S3REC_CATEGORIES}
