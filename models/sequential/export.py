"""ONNX export of the sequential family, optional INT8 quantization, and an ONNX Runtime runner.

Artifact directory (what the registry stores; ``models/contracts.py`` "sequential")::

    model.onnx, model.onnx.data   the dynamo exporter's graph + external weights (keep both)
    item_index.json               index -> item_id list (index 0 = padding, "")
    params.json                   variant, max_len, lte_dim, top_k, lag, feature refs, ...
    model.int8.onnx               optional: dynamic INT8 quantization (see quantize_int8)

Graph: inputs ``item_seq`` int64 [batch, max_len], ``lte`` float32 [batch, lte_dim] (LTE variants
only), ``exclude`` bool [batch, n_items + 1]; outputs ``scores`` float32 [batch, top_k] (descending,
``-inf`` for excluded fill-ins) and ``items`` int64 [batch, top_k]. The batch axis is dynamic.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.onnx_runtime import inference_session
from models.sequential.features import exclude_mask
from models.sequential.model import SASRec, exportable

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ITEM_INDEX_FILE = "item_index.json"
PARAMS_FILE = "params.json"


def export_model(
    model: SASRec,
    out_dir: Path | str,
    item_ids: Sequence[str],
    params: dict[str, Any] | None = None,
    top_k: int = 100,
) -> Path:
    """Write the ONNX graph (top-k inside), ``item_index.json`` and ``params.json`` into ``out_dir``.

    ``item_ids[i]`` is the id of index ``i`` (``item_ids[0]`` is padding). ``params`` adds to the
    written parameters (lag, feature refs, dataset ...). Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    if len(item_ids) != cfg.n_items + 1:
        raise ValueError(f"item_ids has {len(item_ids)} entries, the model has n_items + 1 = {cfg.n_items + 1}")
    wrapper = exportable(model.eval(), top_k)
    b = 2
    example = {
        "item_seq": torch.ones(b, cfg.max_len, dtype=torch.int64),
        "exclude": torch.zeros(b, cfg.n_items + 1, dtype=torch.bool),
    }
    if cfg.has_lte:
        assert cfg.lte_dim is not None
        example["lte"] = torch.zeros(b, cfg.lte_dim, dtype=torch.float32)
    names = ["item_seq", "lte", "exclude"] if cfg.has_lte else ["item_seq", "exclude"]
    args = tuple(example[n] for n in names)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    for stale in (out / ONNX_FILE, out / (ONNX_FILE + ".data")):
        stale.unlink(missing_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), _quiet("onnxscript", "onnx_ir", "torch.onnx"):
        # The exporter notes that "batch" is shared by all inputs (it is: one batch axis); not a problem.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        torch.onnx.export(
            wrapper,
            args,
            str(out / ONNX_FILE),
            dynamo=True,
            input_names=names,
            output_names=["scores", "items"],
            dynamic_shapes={n: {0: batch} for n in names},
            external_data=True,
            verbose=False,
        )
    (out / ITEM_INDEX_FILE).write_text(json.dumps([str(i) for i in item_ids]))
    written = {
        "family": "sequential",
        "variant": cfg.variant,
        "max_len": cfg.max_len,
        "lte_dim": cfg.lte_dim,
        "n_items": cfg.n_items,
        "top_k": wrapper.top_k,
        "model": cfg.to_dict(),
        "inputs": names,
        "sequence_rule": (
            "models.sequential.features.build_inputs: keep recent items at or after lte_as_of - lag_seconds "
            "(lte_as_of = the served LTE version's as-of), last max_len, left-padded"
            if cfg.has_lte
            else "models.sequential.features.build_inputs with lag_seconds=None: last max_len items, left-padded"
        ),
        **(params or {}),
    }
    (out / PARAMS_FILE).write_text(json.dumps(written, indent=2, default=str))
    return out


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """The exporter's graph optimiser logs every rewrite at INFO; keep CLI output to our progress bars."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for lg, _ in saved:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def quantize_int8(artifact_dir: Path | str, out_file: str = INT8_FILE) -> Path:
    """Dynamic INT8 quantization (weights int8, activations quantized on the fly) of the artifact's graph.

    Only MatMul/Gemm weights become int8; the embedding table used for scoring stays a MatMul
    operand and is quantized too, which is where most of the size goes.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(artifact_dir) / ONNX_FILE
    dst = Path(artifact_dir) / out_file
    # ORT logs a "consider pre-processing" hint on the root logger; shape inference adds nothing here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst


class OnnxRecommender:
    """ONNX Runtime inference for a sequential artifact: ``recommend`` returns (scores, items) top-k."""

    def __init__(
        self, artifact_dir: Path | str, onnx_file: str = ONNX_FILE, intra_op_num_threads: int | None = None
    ) -> None:
        self.dir = Path(artifact_dir)
        threads = intra_op_num_threads or int(os.environ.get("RECSYS_ONNX_THREADS", "1"))
        self.session = inference_session(self.dir / onnx_file, threads)
        self.params = json.loads((self.dir / PARAMS_FILE).read_text())
        self.item_ids: list[str] = json.loads((self.dir / ITEM_INDEX_FILE).read_text())
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.has_lte = "lte" in self.input_names

    def recommend(
        self, item_seq: np.ndarray, lte: np.ndarray | None, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        feeds: dict[str, np.ndarray] = {"item_seq": item_seq.astype(np.int64), "exclude": exclude.astype(bool)}
        if self.has_lte:
            if lte is None:
                raise ValueError("this model needs an lte input")
            feeds["lte"] = lte.astype(np.float32)
        scores, items = self.session.run(["scores", "items"], feeds)
        return scores, items

    def dense_scores(
        self, item_seq: np.ndarray, lte: np.ndarray | None, histories: Sequence[np.ndarray], n_items: int
    ) -> np.ndarray:
        """``[B, n_items + 1]`` with the top-k scores in place and ``-inf`` elsewhere (for the eval harness)."""
        exclude = exclude_mask(histories, n_items)
        scores, items = self.recommend(item_seq, lte, exclude)
        dense = np.full((len(item_seq), n_items + 1), -np.inf, dtype=np.float32)
        np.put_along_axis(dense, items, scores, axis=1)
        return dense
