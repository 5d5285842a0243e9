"""ONNX export of CASE and an ONNX Runtime scorer (the contract the basket service is built on).

``export_case(model, item_index, out_dir)`` writes:

* ``model.onnx`` (one file, weights inside). Inputs: ``purchase_days`` float32
  ``[batch, n_candidates, 364]``, ``item_ids`` int64 ``[batch, n_candidates]`` (model item index,
  0 = padding), ``item_mask`` float32 ``[batch, n_candidates]`` (1 = real candidate). Output:
  ``scores`` float32 ``[batch, n_candidates]`` (logits, higher = more likely in the next basket;
  padding gets -1e9). Batch and candidate axes are dynamic.
* ``item_index.json``: list of item ids, index 0 = "" (padding), as ``services/kit/models.py``
  ``load_artifact`` expects.
* ``params.json``: ``family``, ``model`` (the config), ``horizon`` (364), ``max_items`` (1024),
  ``n_explore`` and ``explore_items`` (the popularity-ordered explore list, item ids),
  ``candidate_rule`` (text), ``matrix_rule`` (which day each column is), ``valid_P@10``, ``inputs``,
  ``outputs`` and anything passed in ``params``.

Inputs are built with :func:`models.basket.features.build_user_inputs` /
:func:`~models.basket.features.build_batch_inputs` using ``max_items``, ``explore_items`` and
``n_explore`` from ``params.json``.

The legacy TorchScript exporter is used (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which is not a project dependency, and writes an external ``.onnx.data`` file.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.basket.features import CANDIDATE_RULE, MAX_ITEMS, build_batch_inputs
from models.basket.model import CASE
from models.onnx_runtime import inference_session

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ITEM_INDEX_FILE = "item_index.json"
PARAMS_FILE = "params.json"
INPUT_NAMES = ("purchase_days", "item_ids", "item_mask")
OUTPUT_NAMES = ("scores",)
MATRIX_RULE = (
    "purchase_days[b, n, j] = 1 if the user bought candidate n on day as_of - horizon + j "
    "(UTC day numbers; last column = as_of - 1; purchases on/after as_of ignored; order-only data: basket steps)"
)


def export_case(
    model: CASE,
    item_index: Sequence[str],
    out_dir: Path,
    explore_items: Sequence[str] = (),
    n_explore: int = 0,
    valid_p10: float | None = None,
    max_items: int = MAX_ITEMS,
    params: dict[str, Any] | None = None,
) -> None:
    """Write ``model.onnx``, ``item_index.json`` and ``params.json`` into ``out_dir`` (see module doc)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    if len(item_index) != cfg.n_items + 1 or str(item_index[0]) != "":
        raise ValueError(f"item_index must have n_items + 1 = {cfg.n_items + 1} entries with '' at index 0")
    model = model.eval()
    b, n = 2, 8
    example = (
        torch.zeros(b, n, cfg.horizon, dtype=torch.float32),
        torch.ones(b, n, dtype=torch.int64),
        torch.ones(b, n, dtype=torch.float32),
    )
    example[0][:, :, -1] = 1.0
    axes = {"purchase_days": {0: "batch", 1: "n_candidates"}, "item_ids": {0: "batch", 1: "n_candidates"}}
    axes["item_mask"] = {0: "batch", 1: "n_candidates"}
    axes["scores"] = {0: "batch", 1: "n_candidates"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            example,
            str(out / ONNX_FILE),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    (out / ITEM_INDEX_FILE).write_text(json.dumps([str(i) for i in item_index]))
    written = {
        "family": "basket",
        "model_name": "CASE",
        "model": cfg.to_dict(),
        "horizon": cfg.horizon,
        "max_items": max_items,
        "n_explore": int(n_explore),
        "explore_items": [str(i) for i in explore_items],
        "candidate_rule": CANDIDATE_RULE,
        "matrix_rule": MATRIX_RULE,
        "features": "models.basket.features.build_user_inputs / build_batch_inputs",
        "valid_P@10": valid_p10,
        "inputs": {
            "purchase_days": ["float32", ["batch", "n_candidates", cfg.horizon]],
            "item_ids": ["int64", ["batch", "n_candidates"]],
            "item_mask": ["float32", ["batch", "n_candidates"]],
        },
        "outputs": {"scores": ["float32", ["batch", "n_candidates"]]},
        **(params or {}),
    }
    (out / PARAMS_FILE).write_text(json.dumps(written, indent=2, default=str))


class OnnxCASE:
    """ONNX Runtime scoring of an exported CASE artifact, with the shared feature builder."""

    def __init__(self, artifact_dir: Path | str, intra_op_num_threads: int | None = None) -> None:
        self.dir = Path(artifact_dir)
        threads = intra_op_num_threads or int(os.environ.get("RECSYS_ONNX_THREADS", "1"))
        self.session = inference_session(self.dir / ONNX_FILE, threads)
        self.params: dict[str, Any] = json.loads((self.dir / PARAMS_FILE).read_text())
        self.item_index: list[str] = json.loads((self.dir / ITEM_INDEX_FILE).read_text())
        self.mapping = {item: i for i, item in enumerate(self.item_index) if i}

    def run(self, purchase_days: np.ndarray, item_ids: np.ndarray, item_mask: np.ndarray) -> np.ndarray:
        feeds = {
            "purchase_days": np.ascontiguousarray(purchase_days, dtype=np.float32),
            "item_ids": np.ascontiguousarray(item_ids, dtype=np.int64),
            "item_mask": np.ascontiguousarray(item_mask, dtype=np.float32),
        }
        return self.session.run(list(OUTPUT_NAMES), feeds)[0]

    def recommend(
        self, histories: Sequence[Sequence[tuple[str, int]]], as_of_days: Sequence[int] | int, k: int = 10
    ) -> list[list[tuple[str, float]]]:
        """Top ``k`` ``(item_id, score)`` per user from ``(item_id, day_number)`` histories."""
        p = self.params
        days, ids, mask, cands = build_batch_inputs(
            histories, as_of_days, self.mapping, p["max_items"], p["explore_items"], p["n_explore"], p["horizon"]
        )
        scores = self.run(days, ids, mask)
        out = []
        for b, c in enumerate(cands):
            s = scores[b, : len(c)]
            top = np.argsort(-s, kind="stable")[:k]
            out.append([(c[i], float(s[i])) for i in top])
        return out
