"""Score every user of a purchase_history version for one as-of day and write the rankings to parquet.

The batch job runs the service's own path per user -- the pinned version's online value (so
purchases recorded since the build count), purchases strictly before ``as_of``, candidates and
matrix from ``models.basket.features``, the registered ONNX graph -- only in larger batches and
without HTTP. Users are the version's (its offline parquet) plus those recorded into it since.

Output (one row per user and rank, long format; row groups written as batches finish):
``user_id``, ``rank`` (0 = best), ``item_id``, ``score`` (logit; 0.0 for fallback rows),
``repeat``, ``fallback``, ``as_of`` (date), ``model``, ``model_version``, ``feature_version``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.config import FeatureStoreSettings
from services.basket.app import AsOfWindow, as_of_window, purchase_ref
from services.basket.scoring import Ranked, date_of, day_number_of, history_before, rank_histories
from services.kit.features import ServiceFeatureClient
from services.kit.models import LoadedModel, ModelLoader

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("repeat", pa.bool_()),
        ("fallback", pa.bool_()),
        ("as_of", pa.date32()),
        ("model", pa.string()),
        ("model_version", pa.int32()),
        ("feature_version", pa.string()),
    ]
)


@dataclass
class BatchSummary:
    out: str
    as_of: date
    model: str
    model_version: int
    feature_version: str
    users: int
    scored: int
    fallbacks: int
    rows: int
    seconds: float
    inference_seconds: float

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "as_of": self.as_of.isoformat(),
            "model": self.model,
            "model_version": self.model_version,
            "feature_version": self.feature_version,
            "users": self.users,
            "scored": self.scored,
            "fallbacks": self.fallbacks,
            "rows": self.rows,
            "seconds": round(self.seconds, 2),
            "inference_seconds": round(self.inference_seconds, 2),
            "users_per_second": round(self.users_per_second, 1),
        }


def version_users(settings: FeatureStoreSettings, features: ServiceFeatureClient, ref: str) -> list[str]:
    """The users of ``ref``: those in its offline parquet, then those recorded into it since (the purchase log)."""
    from feature_store.pipelines.purchases import purchase_log_path

    spec = features.client.version(ref)
    table = pq.read_table(settings.data_dir / spec.source_path, columns=[spec.join_key])
    users = dict.fromkeys(table.column(0).to_pylist())
    log_path = purchase_log_path(settings, spec.dataset)
    if log_path.exists():
        with log_path.open() as fh:
            for line in fh:
                rec = json.loads(line)
                if rec.get("ref") == spec.ref:
                    users.setdefault(str(rec["user_id"]))
    return sorted(users)


def check_as_of(window: AsOfWindow, as_of: date | None) -> int:
    """The as-of day for the job: the snapshot's reference day by default, else ``as_of`` within the window."""
    if as_of is None:
        return window.reference_day
    day = day_number_of(as_of)
    if not window.earliest_day <= day <= window.latest_day:
        raise ValueError(
            f"as_of {as_of} is outside {window.ref}'s range "
            f"{date_of(window.earliest_day)}..{date_of(window.latest_day)}"
        )
    return day


def score_all_users(
    settings: FeatureStoreSettings,
    out: Path,
    *,
    as_of: date | None = None,
    model_name: str = "case",
    model_ref: str = "champion",
    k: int = 20,
    batch_size: int = 256,
    threads: int = 1,
    max_days_after_snapshot: int = 90,
    registry: Any | None = None,
    show_progress: bool = True,
) -> BatchSummary:
    """Top ``k`` per user of the model's pinned purchase_history version, as of ``as_of``, into ``out`` (parquet)."""
    from models.registry import ModelRegistry

    t0 = time.perf_counter()
    own = registry is None
    reg = registry or ModelRegistry.from_settings(settings)
    features = ServiceFeatureClient.from_settings("basket-batch", settings)
    try:
        model = ModelLoader(reg, threads=threads).get(model_name, model_ref)
        ref = purchase_ref(model)
        window = as_of_window(features, ref, max_days_after_snapshot)
        as_of_day = check_as_of(window, as_of)
        users = version_users(settings, features, ref)
        summary = _run(model, features, ref, users, as_of_day, k, batch_size, Path(out), show_progress)
    finally:
        features.close()
        if own:
            reg.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _run(
    model: LoadedModel,
    features: ServiceFeatureClient,
    ref: str,
    users: list[str],
    as_of_day: int,
    k: int,
    batch_size: int,
    out: Path,
    show_progress: bool,
    model_batch: int = 64,
) -> BatchSummary:
    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    as_of = date_of(as_of_day)
    popular = [str(model.item_ids[int(x)]) for x in model.popular[:k]]
    scored = fallbacks = rows = 0
    inference = 0.0
    bar = tqdm(total=len(users), desc=f"basket batch {as_of}", unit="user", disable=not show_progress)
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        # Reads go in chunks of batch_size users; inside a chunk users are sorted by distinct items
        # and scored model_batch at a time, so one ONNX call pads to similar candidate counts (its
        # cost is linear in the longest row times the batch).
        for lo in range(0, len(users), batch_size):
            chunk = users[lo : lo + batch_size]
            rows_read = features.read(ref, chunk)
            histories: list[list[tuple[str, int]]] = []
            for r in range(len(chunk)):
                if not rows_read.present[r]:
                    histories.append([])
                    continue
                histories.append(
                    history_before(rows_read.values["item_ids"][r], rows_read.values["days"][r], as_of_day)  # type: ignore[index]
                )
            known = [any(i in model.item_index for i, _ in h) for h in histories]
            cols: dict[str, list[Any]] = {name: [] for name in ("user_id", "rank", "item_id", "score", "repeat")}
            fb: list[bool] = []
            todo = [r for r in range(len(chunk)) if known[r]]
            todo.sort(key=lambda r: len({i for i, _ in histories[r]}))
            ranked: list[Ranked] = []
            for s in range(0, len(todo), model_batch):
                part = todo[s : s + model_batch]
                out_part, seconds = rank_histories(
                    model, [histories[r] for r in part], [as_of_day] * len(part), [k] * len(part)
                )
                ranked += out_part
                inference += seconds
            if todo:
                for r, res in zip(todo, ranked, strict=True):
                    n = len(res.item_ids)
                    cols["user_id"] += [chunk[r]] * n
                    cols["rank"] += list(range(n))
                    cols["item_id"] += res.item_ids
                    cols["score"] += res.scores
                    cols["repeat"] += res.repeat
                    fb += [False] * n
                scored += len(todo)
            for r in range(len(chunk)):
                if known[r]:
                    continue
                cols["user_id"] += [chunk[r]] * len(popular)
                cols["rank"] += list(range(len(popular)))
                cols["item_id"] += popular
                cols["score"] += [0.0] * len(popular)
                cols["repeat"] += [False] * len(popular)
                fb += [True] * len(popular)
                fallbacks += 1
            n_rows = len(fb)
            table = pa.table(
                {
                    **{name: cols[name] for name in ("user_id", "rank", "item_id")},
                    "score": np.asarray(cols["score"], dtype=np.float32),
                    "repeat": cols["repeat"],
                    "fallback": fb,
                    "as_of": [as_of] * n_rows,
                    "model": [model.name] * n_rows,
                    "model_version": [model.version] * n_rows,
                    "feature_version": [ref] * n_rows,
                },
                schema=SCHEMA,
            )
            writer.write_table(table)
            rows += n_rows
            bar.update(len(chunk))
    bar.close()
    tmp.replace(out)  # readers never see a half-written file
    log.info("basket batch: %d users (%d fallbacks) -> %s", len(users), fallbacks, out)
    return BatchSummary(
        out=str(out),
        as_of=as_of,
        model=model.name,
        model_version=model.version,
        feature_version=ref,
        users=len(users),
        scored=scored,
        fallbacks=fallbacks,
        rows=rows,
        seconds=0.0,
        inference_seconds=inference,
    )
