"""Which semantic basis serves the LTE best? An offline comparison on MovieLens.

MovieLens items have both text (titles) and attributes (genres), so the same users can be
scored through a text basis, an attribute basis, a text+genres basis, a random control and a
popularity reference. The LTE is deliberately the simplest one the feature store computes: the
uniform average of the basis vectors of a user's items in a lagged window. A basis that makes
this average predictive of what the user watches next is a good coordinate system for the
learned models reading LTE features.

Protocol (per user; written into the results so a reader does not need this file):
  * events sorted by (timestamp, item id); n events, cutoff c = floor(0.8 n)
  * LTE window: events [0, c - lag), i.e. everything before the cutoff except the last ``lag``
    events (the lag gap mimics feature staleness: the stored LTE lags the live history)
  * seen: events [0, c); targets: distinct items of events [c, n) not seen
  * users need c - lag >= 1 and at least one target
  * every catalogue item (the items file, not only rated ones) is scored by dot(LTE, vector);
    seen items are removed; ties are broken by one fixed random permutation of the catalogue
  * Recall@50 = hits in top 50 / #targets; NDCG@K with binary gains, ideal = min(#targets, K) hits
  * popularity = number of pre-cutoff events of the item over all users (a reference, not an
    LTE; other users' pre-cutoff events may lie after this user's cutoff)

    python -m feature_store.pipelines.basis_eval --dataset ml-latest-small
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.pipelines.basis import (
    SemanticBasis,
    build_attribute_basis,
    build_random_basis,
    build_text_attribute_basis,
    build_text_basis,
    save_basis,
)

log = logging.getLogger(__name__)

DATASETS = ("ml-latest-small", "ml-1m")
DEFAULT_JSON = Path("docs/results/basis.json")
DEFAULT_MD = Path("docs/results/basis.md")
METRICS = ("recall@50", "ndcg@10", "ndcg@100")
NO_GENRE = "(no genres listed)"
YEAR_RE = re.compile(r"\s*\(\d{4}\)\s*$")


# --------------------------------------------------------------------------- data


def _genre_tokens(genres: pd.Series) -> list[list[str]]:
    return [[f"genre:{g}" for g in str(s).split("|") if g and g != NO_GENRE] for s in genres]


def _read_movielens_direct(name: str, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fallback reader of the two MovieLens layouts (used when the official adapters are unavailable)."""
    if name == "ml-latest-small":
        r = pd.read_csv(root / name / "ratings.csv.gz")
        inter = pd.DataFrame({"user_id": r["userId"], "item_id": r["movieId"], "ts": r["timestamp"]})
        m = pd.read_csv(root / name / "movies.csv.gz")
        items = pd.DataFrame({"item_id": m["movieId"], "text": m["title"], "attributes": _genre_tokens(m["genres"])})
    elif name == "ml-1m":
        r = pd.read_csv(root / name / "ratings_recent_with_time.csv.gz")
        inter = pd.DataFrame({"user_id": r["user_id"], "item_id": r["movie_id"], "ts": r["timestamp"]})
        m = pd.read_csv(
            root / name / "movies.dat.gz", sep="::", engine="python", encoding="latin-1", names=["id", "title", "g"]
        )
        items = pd.DataFrame({"item_id": m["id"], "text": m["title"], "attributes": _genre_tokens(m["g"])})
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    return inter, items


def load_movielens(name: str, root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(interactions[user_id, item_id, ts (int64 seconds)], items, loader used).

    Prefers the feature store's own adapters (``feature_store.sources.adapters.load_dataset``)
    so the comparison sees exactly what the platform ingests; falls back to reading the files.
    """
    from feature_store.config import FeatureStoreSettings

    root = Path(root) if root is not None else FeatureStoreSettings().datasets_root
    try:
        from feature_store.sources.adapters import load_dataset  # type: ignore[attr-defined]

        try:
            ds = load_dataset(name, root=root)
        except TypeError:
            ds = load_dataset(name)
        if ds.time_kind != "unix" or not ds.items["text"].str.len().gt(0).any():
            raise ValueError(f"adapter returned time_kind={ds.time_kind!r} or no item text")
        inter = ds.interactions[["user_id", "item_id"]].copy()
        inter["ts"] = ds.interactions["timestamp"].astype("int64") // 1_000_000  # datetime64[us] -> seconds
        return inter, ds.items[["item_id", "text", "attributes"]].copy(), "feature_store.sources.adapters"
    except Exception as exc:
        log.info("adapters unavailable for %s (%s: %s); reading the files directly", name, type(exc).__name__, exc)
    inter, items = _read_movielens_direct(name, root)
    return inter, items, "direct-read (basis_eval._read_movielens_direct)"


# --------------------------------------------------------------------------- split


@dataclass
class EvalSplit:
    """Per-user catalogue positions for the lagged-window protocol (see module docstring)."""

    users: np.ndarray  # (U,) user ids
    window: list[np.ndarray]  # catalogue positions whose vectors are averaged into the LTE
    seen: list[np.ndarray]  # positions removed from the ranking
    targets: list[np.ndarray]  # positions to retrieve
    popularity: np.ndarray  # (I,) pre-cutoff event counts
    n_events: int
    n_dropped_unknown_items: int
    n_users_skipped: int


def make_split(inter: pd.DataFrame, catalogue: np.ndarray, frac: float = 0.8, lag: int = 5) -> EvalSplit:
    """Apply the per-user temporal protocol; item ids are mapped to positions in ``catalogue``."""
    pos_of = {iid: i for i, iid in enumerate(catalogue.tolist())}
    df = inter.assign(user_id=inter["user_id"].astype(str), item_id=inter["item_id"].astype(str))
    df["pos"] = df["item_id"].map(pos_of)
    unknown = int(df["pos"].isna().sum())
    df = df.dropna(subset=["pos"]).astype({"pos": np.int64})
    df = df.sort_values(["user_id", "ts", "item_id"], kind="stable")
    users, window, seen, targets = [], [], [], []
    popularity = np.zeros(len(catalogue), dtype=np.float64)
    skipped = 0
    for uid, grp in df.groupby("user_id", sort=True):
        hist = grp["pos"].to_numpy()
        c = math.floor(frac * len(hist))
        np.add.at(popularity, hist[:c], 1.0)
        if c - lag < 1:
            skipped += 1
            continue
        seen_u = np.unique(hist[:c])
        tgt = np.setdiff1d(np.unique(hist[c:]), seen_u, assume_unique=True)
        if len(tgt) == 0:
            skipped += 1
            continue
        users.append(uid)
        window.append(hist[: c - lag])
        seen.append(seen_u)
        targets.append(tgt)
    return EvalSplit(np.asarray(users), window, seen, targets, popularity, len(df), unknown, skipped)


# --------------------------------------------------------------------------- metrics


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def rank_metrics(
    score_fn: Callable[[np.ndarray], np.ndarray], split: EvalSplit, n_items: int, batch: int = 512
) -> dict[str, np.ndarray]:
    """Per-user Recall@50, NDCG@10, NDCG@100 over the full catalogue ranking.

    score_fn maps a batch of user indices to a (B, n_items) score matrix.
    """
    tie = np.random.default_rng(0).permutation(n_items)  # fixed tie-break order, unrelated to item ids
    kmax = 100
    disc = _discounts(kmax)
    out = {m: np.zeros(len(split.users)) for m in METRICS}
    for start in range(0, len(split.users), batch):
        idx = np.arange(start, min(start + batch, len(split.users)))
        scores = np.asarray(score_fn(idx), dtype=np.float64)
        for row, u in enumerate(idx):
            scores[row, split.seen[u]] = -np.inf
        # Stable sort on the tie-permuted columns: equal scores keep the permutation's order.
        order = tie[np.argsort(-scores[:, tie], axis=1, kind="stable")[:, :kmax]]
        for row, u in enumerate(idx):
            hit = np.isin(order[row], split.targets[u])
            n_t = len(split.targets[u])
            out["recall@50"][u] = hit[:50].sum() / n_t
            for k in (10, 100):
                ideal = disc[: min(n_t, k)].sum()
                top = hit[:k]  # shorter than k when the catalogue has fewer than k items
                out[f"ndcg@{k}"][u] = (top * disc[: len(top)]).sum() / ideal
    return out


def lte_matrix(vectors: np.ndarray, split: EvalSplit, idx: np.ndarray) -> np.ndarray:
    """Uniform average of window item vectors per user (zero rows for text-less items included)."""
    return np.stack([vectors[split.window[u]].mean(axis=0) for u in idx])


def evaluate_basis(basis: SemanticBasis, split: EvalSplit) -> dict[str, np.ndarray]:
    """Per-user metrics of the LTE computed in ``basis`` (its item order must be the catalogue's)."""
    vec = basis.vectors.astype(np.float64)
    return rank_metrics(lambda idx: lte_matrix(vec, split, idx) @ vec.T, split, len(vec))


def evaluate_popularity(split: EvalSplit) -> dict[str, np.ndarray]:
    pop = split.popularity
    return rank_metrics(lambda idx: np.broadcast_to(pop, (len(idx), len(pop))).copy(), split, len(pop))


def _summary(per_user: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    n = len(next(iter(per_user.values())))
    return {
        m: {"mean": float(v.mean()), "se": float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0}
        for m, v in per_user.items()
    }


def _paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and standard error of the per-user difference a - b (same users, so paired)."""
    out = {}
    for m in METRICS:
        d = a[m] - b[m]
        out[m] = {"diff": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0}
    return out


# --------------------------------------------------------------------------- comparison


def compare_bases(
    dataset: str,
    dim: int = 64,
    lag: int = 5,
    frac: float = 0.8,
    datasets_root: Path | None = None,
    cache_dir: Path | None = None,
    save_root: Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Build every candidate basis for ``dataset`` and evaluate the LTE in each; returns a JSON-able dict."""
    t0 = time.perf_counter()
    inter, items, loader = load_movielens(dataset, datasets_root)
    from feature_store.sources.schema import validate_items

    items = validate_items(items).sort_values("item_id", key=lambda s: s.map(_sort_key)).reset_index(drop=True)
    catalogue = items["item_id"].to_numpy()
    split = make_split(inter, catalogue, frac, lag)
    log.info("%s: %d users evaluated, %d items, %d events", dataset, len(split.users), len(catalogue), split.n_events)

    from feature_store.pipelines.text_encoder import get_encoder

    encoder = get_encoder(cache_dir=cache_dir, show_progress=show_progress)
    before = dict(encoder.stats)
    kw = {"cache_dir": cache_dir, "show_progress": show_progress}
    genre = ["genre"]
    builders: list[tuple[str, str, Callable[[], SemanticBasis]]] = [
        ("text", "MiniLM titles, PCA to 64", lambda: build_text_basis(items, dim, **kw)),
        ("genres-idf", "hashed genre tokens, idf", lambda: build_attribute_basis(items, dim, "idf", genre)),
        ("genres-count", "hashed genre tokens, unweighted", lambda: build_attribute_basis(items, dim, "count", genre)),
        (
            "text+genres",
            "MiniLM 'title. genre: a, b.', PCA to 64",
            lambda: build_text_attribute_basis(items, dim, kinds=genre, **kw),
        ),
        ("random", "sha256 random vector per item (control)", lambda: build_random_basis(items, dim)),
        (
            "text-noyear",
            "MiniLM titles without '(year)', PCA to 64 (ablation)",
            lambda: build_text_basis(items, dim, texts=strip_year(items["text"]), text_label="noyear", **kw),
        ),
        (
            "text-384",
            "MiniLM titles, centred, no reduction (384-d reference)",
            lambda: build_text_basis(items, None, **kw),
        ),
    ]
    per_user: dict[str, dict[str, np.ndarray]] = {}
    results: dict[str, Any] = {}
    for key, desc, build in builders:
        tb = time.perf_counter()
        basis = build()
        built_s = time.perf_counter() - tb
        per_user[key] = evaluate_basis(basis, split)
        n_zero = int((~np.any(basis.vectors != 0, axis=1)).sum())
        results[key] = {
            "description": desc,
            "encoder": basis.encoder,
            "fingerprint": basis.fingerprint,
            "dim": basis.dim,
            "zero_rows": n_zero,
            "build_s": round(built_s, 2),
            "metrics": _summary(per_user[key]),
        }
        if getattr(basis, "reduction", {}).get("explained_variance") is not None:
            results[key]["pca_explained_variance"] = round(basis.reduction["explained_variance"], 4)
        if save_root is not None:
            results[key]["saved_to"] = str(save_basis(basis, save_root))
        log.info("%s %-12s %s", dataset, key, {m: round(v["mean"], 4) for m, v in results[key]["metrics"].items()})
    per_user["popularity"] = evaluate_popularity(split)
    pop_summary = _summary(per_user["popularity"])
    results["popularity"] = {"description": "pre-cutoff event count (reference)", "metrics": pop_summary}

    encoded = encoder.stats["encoded"] - before["encoded"]
    encode_s = encoder.stats["encode_s"] - before["encode_s"]
    return {
        "dataset": dataset,
        "loader": loader,
        "command": f"python -m feature_store.pipelines.basis_eval --dataset {dataset} --dim {dim} --lag {lag}",
        "protocol": {"cutoff_fraction": frac, "lag_events": lag, "dim": dim, "tie_break": "fixed permutation, seed 0"},
        "n_users": len(split.users),
        "n_users_skipped": split.n_users_skipped,
        "n_items": len(catalogue),
        "n_events": split.n_events,
        "n_events_unknown_item": split.n_dropped_unknown_items,
        "mean_window": float(np.mean([len(w) for w in split.window])),
        "mean_targets": float(np.mean([len(t) for t in split.targets])),
        "results": results,
        "paired_vs_text": {k: _paired(v, per_user["text"]) for k, v in per_user.items() if k != "text"},
        "paired_idf_vs_count": _paired(per_user["genres-idf"], per_user["genres-count"]),
        "encoder": {
            "namespace": encoder.namespace,
            "texts_encoded": int(encoded),
            "texts_from_cache": int(encoder.stats["cached"] - before["cached"]),
            "encode_s": round(encode_s, 2),
            "texts_per_s": round(encoded / encode_s, 1) if encode_s > 0 else None,
        },
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }


def strip_year(titles: pd.Series) -> list[str]:
    """MovieLens titles without the trailing release year: "Heat (1995)" -> "Heat" (ablation only)."""
    return [YEAR_RE.sub("", t) for t in titles.astype(str)]


def _sort_key(item_id: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order (MovieLens), others lexicographically after them."""
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


# --------------------------------------------------------------------------- report

# Written from the tables below (runs of 2026-11-24); the per-dataset bullets are regenerated on every run.
CONCLUSION = """\
* **Where titles and genres both exist, use the text+attributes basis** (MiniLM over
  "title. genre: a, b.", PCA to 64): it is the best 64-d basis on every metric on both data sets. On
  ml-1m (5.6k users) the gain over the title-only text basis is 3.5 (NDCG@10) to 13 (Recall@50,
  NDCG@100) standard errors; on ml-latest-small (671 users) it is ~4 SE for Recall@50 and NDCG@100
  and within noise for NDCG@10. Written as words, genres are related by the language model
  (Comedy ~ Romance) instead of being unrelated hashed tokens, and they add to what the title says.
* Title text alone beats genres alone at the top of the ranking (NDCG@10); on ml-1m the two tie on
  Recall@50. Much of what titles carry is the release year: stripping "(1995)" costs 46% (ml-latest-
  small) / 23% (ml-1m) of the text basis' Recall@50 and 24% / 16% of its NDCG@10. Era is a strong
  taste signal that genres do not carry.
* The attribute (hashed genre) basis is 2.7x (ml-latest-small) to 3.9x (ml-1m) above the random
  control in NDCG@10, so it is a usable basis for text-less data such as the Amazon S3Rec items.
  **idf vs. count weighting made no practical difference** on MovieLens' ~20 genres: every paired
  difference is below 0.002 absolute, and the NDCG@100 differences point in opposite directions on
  the two data sets. idf stays the default because attribute-rich catalogues mix near-universal
  tokens (a top category) with rare, informative ones (a brand), and idf keeps the former from
  dominating every item vector; the weights are stored in the artifact.
* Centring is what makes text work: a one-off check with uncentred 384-d MiniLM vectors (not in the
  tables) gave Recall@50 0.0348 / NDCG@10 0.0167 on ml-latest-small and 0.0389 / 0.0113 on ml-1m,
  below the centred PCA-64 basis: all titles share one direction (on ml-latest-small the mean title
  vector has norm 0.49, the average pairwise cosine is 0.24), which swamps the dot products. Against the
  centred 384-d vectors (text-384), PCA to 64 costs 0.003-0.005 Recall@50 for 6x smaller LTE features.
* All LTE-only rankings stay well below popularity: the uniform average of content vectors is a
  feature for learned models, not a recommender by itself. The random control sits at chance
  (Recall@50 ~ 50 / catalogue size), as it must.
* Encoder cost: on the 2-core machine, alone, MiniLM encoded 400-470 MovieLens titles/s (first
  ml-latest-small run: 9,123 titles in 20 s; 18,248 titles and title+genre sentences at 407/s). The
  per-run figures above are lower because other CPU-heavy jobs shared the cores during the recorded
  run. Re-building a basis from the encoder cache costs only the PCA SVD (~2 s for 9k items).
* ml-1m caveat: only the 299k timed ratings exist (the valid+test rows of a temporal split), so each
  history starts late and is short (mean LTE window 37 events vs. 114 on ml-latest-small).
"""

ORDER = ("text", "genres-idf", "genres-count", "text+genres", "random", "popularity", "text-noyear", "text-384")


def _fmt(m: dict[str, float]) -> str:
    return f"{m['mean']:.4f} ± {m['se']:.4f}"


def _conclusion(res: dict[str, Any]) -> list[str]:
    r = res["results"]
    content = [k for k in ("text", "genres-idf", "genres-count", "text+genres") if k in r]
    best = max(content, key=lambda k: r[k]["metrics"]["ndcg@10"]["mean"])
    lines = [f"* Best 64-d content basis by NDCG@10: **{best}** ({_fmt(r[best]['metrics']['ndcg@10'])})."]
    for k in [*content, "text-noyear", "text-384"]:
        if k == "text" or k not in res["paired_vs_text"]:
            continue
        p = res["paired_vs_text"][k]
        parts = ", ".join(f"{m} {p[m]['diff']:+.4f} ± {p[m]['se']:.4f}" for m in METRICS)
        lines.append(f"* {k} − text (paired over users): {parts}.")
    p = res["paired_idf_vs_count"]
    parts = ", ".join(f"{m} {p[m]['diff']:+.4f} ± {p[m]['se']:.4f}" for m in METRICS)
    lines.append(f"* genres-idf − genres-count (paired): {parts}.")
    rnd, pop = r["random"]["metrics"]["ndcg@10"]["mean"], r["popularity"]["metrics"]["ndcg@10"]["mean"]
    lines.append(f"* Random control NDCG@10 {rnd:.4f}; popularity reference {pop:.4f}.")
    return lines


def render_markdown(all_results: dict[str, Any]) -> str:
    """The human summary of docs/results/basis.json."""
    out = [
        "# Semantic basis comparison: which basis serves the LTE better?",
        "",
        "Generated by `feature_store/pipelines/basis_eval.py` from `docs/results/basis.json`; do not edit by hand.",
        "Produced with `python -m feature_store.pipelines.basis_eval --dataset ml-latest-small --dataset ml-1m`",
        "(each dataset's own command is given below; `--render-only` rewrites this file from the JSON).",
        "",
        "## Protocol",
        "",
        "* Per user, events sorted by (timestamp, item id); n events, cutoff c = floor(0.8·n).",
        "* LTE = uniform average of the basis vectors of events [0, c − lag) with **lag = 5 events** (the last",
        "  5 pre-cutoff events are a staleness gap, as for a stored LTE that lags the live history).",
        "* Targets: distinct items of events [c, n) the user had not seen before the cutoff. Users need",
        "  c − lag ≥ 1 and ≥ 1 target. All ratings count as interactions (no rating threshold). ml-1m uses",
        "  its timed ratings only (ratings_recent_with_time: the valid+test rows of a temporal split; the",
        "  split column is ignored and the same 80% cutoff applies).",
        "* Every catalogue item (the whole movies file) is scored by dot(LTE, item vector); pre-cutoff items are",
        "  removed; ties are broken by one fixed random permutation (seed 0), so equal scores neither help nor",
        "  hurt any basis. Full ranking, no sampled negatives.",
        "* Recall@50 = hits@50 / #targets; NDCG@K binary, ideal DCG over min(#targets, K) hits. Values are",
        "  means over users ± standard error; paired differences use the same users.",
        "* Every basis is 64-d, except text-384: the same centred title embeddings without the PCA (equal to a",
        "  PCA keeping all 384 axes), a reference for what the reduction to 64 costs.",
        "  Popularity (pre-cutoff event counts over all users) is a reference, not an LTE.",
        "",
    ]
    for name, res in all_results.get("datasets", {}).items():
        out += [
            f"## {name}",
            "",
            f"`{res['command']}` — {res['n_users']} users ({res['n_users_skipped']} skipped), "
            f"{res['n_items']} catalogue items, {res['n_events']} events; mean LTE window "
            f"{res['mean_window']:.1f} events, mean {res['mean_targets']:.1f} targets per user; data via "
            f"{res['loader']}.",
            "",
            "| basis | what | encoder id | fingerprint | Recall@50 | NDCG@10 | NDCG@100 |",
            "|---|---|---|---|---|---|---|",
        ]
        for key in ORDER:
            if key not in res["results"]:
                continue
            r = res["results"][key]
            m = r["metrics"]
            fp = f"`{r['fingerprint'][:12]}`" if "fingerprint" in r else "-"
            enc = "`" + r["encoder"].replace("|", "\\|") + "`" if "encoder" in r else "-"
            row = [key, r["description"], enc, fp] + [_fmt(m[k]) for k in METRICS]
            out.append("| " + " | ".join(row) + " |")
        e = res["encoder"]
        out += [
            "",
            *_conclusion(res),
            "",
            f"Encoder: {e['texts_encoded']} texts encoded in {e['encode_s']} s "
            f"({e['texts_per_s']} texts/s), {e['texts_from_cache']} served from the cache.",
            "",
        ]
    out += ["## Conclusion", "", CONCLUSION]
    return "\n".join(out)


def write_results(res: dict[str, Any], json_path: Path = DEFAULT_JSON, md_path: Path = DEFAULT_MD) -> None:
    """Merge one dataset's results into the JSON (other datasets kept) and regenerate the markdown."""
    json_path = Path(json_path)
    data: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    data.setdefault("datasets", {})[res["dataset"]] = res
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    Path(md_path).write_text(render_markdown(data))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=DATASETS, action="append", help="repeatable; default: ml-latest-small")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--lag", type=int, default=5)
    ap.add_argument("--cutoff", type=float, default=0.8)
    ap.add_argument("--datasets-root", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="encoder cache (default <data_dir>/encoder_cache)")
    ap.add_argument("--save-bases", type=Path, default=None, help="also save every basis under this root")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--md", type=Path, default=DEFAULT_MD)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="only regenerate the markdown from the JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.render_only:
        args.md.write_text(render_markdown(json.loads(args.json.read_text())))
        return 0
    for name in args.dataset or ["ml-latest-small"]:
        res = compare_bases(
            name,
            args.dim,
            args.lag,
            args.cutoff,
            args.datasets_root,
            args.cache_dir,
            args.save_bases,
            show_progress=not args.no_progress,
        )
        write_results(res, args.json, args.md)
        print(json.dumps({k: v["metrics"] for k, v in res["results"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
