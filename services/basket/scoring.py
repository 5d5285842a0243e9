"""Purchase histories -> CASE inputs -> one ONNX call -> ranked items: shared by the service and the batch job.

The inputs are built only by ``models.basket.features.build_batch_inputs`` (the function training
and offline evaluation use), with ``max_items``, ``explore_items``, ``n_explore`` and ``horizon``
from the artifact's ``params.json``, so serving cannot drift from training. That function uses
only purchases strictly before each user's as-of day (the matrix ends on ``as_of - 1``; later
purchases are neither candidates nor matrix cells), which is what makes a past ``as_of`` leak-free.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from models.basket.features import build_batch_inputs
from services.kit.models import LoadedModel

OUTPUT = "scores"
_EPOCH = date(1970, 1, 1)


def day_number_of(d: date) -> int:
    """UTC day number of a calendar date (days since 1970-01-01, the feature view's numbering)."""
    return (d - _EPOCH).days


def date_of(day: int) -> date:
    return date.fromordinal(_EPOCH.toordinal() + int(day))


@dataclass(frozen=True)
class CandidateSettings:
    """What ``build_batch_inputs`` needs from an artifact (its params.json)."""

    max_items: int
    explore_items: tuple[str, ...]
    n_explore: int
    horizon: int

    @classmethod
    def of(cls, model: LoadedModel) -> CandidateSettings:
        # Parsed once per loaded version (the loader keeps versions for the life of the process,
        # and the entry holds the model, so an id is never reused while cached).
        hit = _SETTINGS.get(id(model))
        if hit is not None and hit[0] is model:
            return hit[1]
        p = model.params
        out = cls(
            max_items=int(p.get("max_items", 1024)),
            explore_items=tuple(str(i) for i in p.get("explore_items", ())),
            n_explore=int(p.get("n_explore", 0)),
            horizon=int(p.get("horizon", 364)),
        )
        _SETTINGS[id(model)] = (model, out)
        return out


_SETTINGS: dict[int, tuple[LoadedModel, CandidateSettings]] = {}


@dataclass
class Ranked:
    """One user's top items: ids, scores (logits) and whether the user bought the item before as_of."""

    item_ids: list[str]
    scores: list[float]
    repeat: list[bool]


def history_before(item_ids: Sequence[str], days: Sequence[int], as_of_day: int) -> list[tuple[str, int]]:
    """``(item_id, day)`` pairs strictly before ``as_of_day`` (an as-of in the past sees no later purchase)."""
    return [(i, int(d)) for i, d in zip(item_ids, days, strict=True) if int(d) < as_of_day]


def rank_histories(
    model: LoadedModel,
    histories: Sequence[Sequence[tuple[str, int]]],
    as_of_days: Sequence[int],
    ks: Sequence[int],
) -> tuple[list[Ranked], float]:
    """Top ``ks[b]`` candidates of each history (one ONNX call for all); also the inference seconds."""
    cs = CandidateSettings.of(model)
    days, ids, mask, candidates = build_batch_inputs(
        histories, list(as_of_days), model.item_index, cs.max_items, cs.explore_items, cs.n_explore, cs.horizon
    )
    start = time.perf_counter()
    (scores,) = model.outputs([OUTPUT], {"purchase_days": days, "item_ids": ids, "item_mask": mask})
    seconds = time.perf_counter() - start
    out: list[Ranked] = []
    for b, cands in enumerate(candidates):
        s = scores[b, : len(cands)]
        top = np.argsort(-s, kind="stable")[: ks[b]]
        bought = {i for i, d in histories[b] if d < as_of_days[b]}
        out.append(
            Ranked(
                item_ids=[cands[j] for j in top.tolist()],
                scores=s[top].astype(float).tolist(),
                repeat=[cands[j] in bought for j in top.tolist()],
            )
        )
    return out, seconds
