"""ONNX export of a CTR model (calibration folded in) and an ONNX Runtime scorer for its artifact.

Artifact directory (what the service loads)::

    model.onnx    one file (the legacy TorchScript exporter: no external .onnx.data)
    fields.json   FieldSpec: {"categorical": [{name, offset, size, default_id, values}], "numeric": [...]}
    params.json   family "ctr", variant, model config, embedding size, parameter counts,
                  validation AUC, calibration

Graph: input ``feature_ids`` int64 [batch, n_categorical] (global ids, offsets already added:
:func:`models.ctr.data.encode_rows`), plus ``numeric`` float32 [batch, n_numeric] only when the
spec has numeric fields (raw values; missing = the field's default; the graph applies
``sign(x) * log1p(|x|)``); output ``probability`` float32 [batch] (calibrated). Dynamic batch.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.ctr.calibrate import Calibration
from models.ctr.data import FieldSpec, encode_rows
from models.ctr.model import CalibratedCTR, CTRModel, count_parameters
from models.onnx_runtime import inference_session

ONNX_FILE = "model.onnx"
FIELDS_FILE = "fields.json"
PARAMS_FILE = "params.json"
INPUT_IDS = "feature_ids"
INPUT_NUMERIC = "numeric"
OUTPUT = "probability"
OPSET = 17


def export_ctr(
    model: CTRModel,
    field_spec: FieldSpec,
    out_dir: Path,
    calibration: Calibration | None = None,
    valid_auc: float | None = None,
    extra_params: dict[str, Any] | None = None,
) -> None:
    """Write ``model.onnx``, ``fields.json`` and ``params.json`` into ``out_dir`` (see the module doc)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    if cfg.n_categorical != len(field_spec.categorical) or cfg.n_numeric != len(field_spec.numeric):
        raise ValueError(
            f"model expects {cfg.n_categorical} categorical + {cfg.n_numeric} numeric fields, spec has "
            f"{len(field_spec.categorical)} + {len(field_spec.numeric)}"
        )
    if cfg.n_features != field_spec.n_features:
        raise ValueError(f"model has {cfg.n_features} ids, spec {field_spec.n_features}: not the same vocabulary")
    cal = calibration or Calibration()
    wrapper = CalibratedCTR(model.eval(), cal.scale, cal.bias).eval()
    example_ids = torch.tensor([[f.default_id for f in field_spec.categorical]] * 2, dtype=torch.int64)
    args: tuple[torch.Tensor, ...] = (example_ids,)
    names = [INPUT_IDS]
    if cfg.n_numeric:
        args = (example_ids, torch.zeros(2, cfg.n_numeric, dtype=torch.float32))
        names.append(INPUT_NUMERIC)
    path = out / ONNX_FILE
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its deprecation; it is chosen on purpose (one self-contained file).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            dynamo=False,
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes={**{n: {0: "batch"} for n in names}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
        )
    (out / FIELDS_FILE).write_text(json.dumps(field_spec.to_dict(), indent=1))
    params = {
        "family": "ctr",
        "variant": cfg.label,
        "model": cfg.to_dict(),
        "embed_dim": cfg.embed_dim,
        "parameters": count_parameters(model),
        "valid_auc": valid_auc,
        "calibration": cal.to_dict(),
        "inputs": names,
        "output": OUTPUT,
        "numeric_transform": "sign(x) * log1p(|x|) inside the graph; send raw values, missing -> field default",
        "unknown_values": "map to the field's default_id (one OOV id reserved per field)",
        **(extra_params or {}),
    }
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=2, default=str))


class OnnxCTRScorer:
    """ONNX Runtime inference over an artifact: raw rows or encoded inputs -> calibrated probabilities."""

    def __init__(self, artifact_dir: Path | str, intra_op_num_threads: int | None = None) -> None:
        self.dir = Path(artifact_dir)
        threads = intra_op_num_threads or int(os.environ.get("RECSYS_ONNX_THREADS", "1"))
        self.session = inference_session(self.dir / ONNX_FILE, threads)
        self.spec = FieldSpec.from_dict(json.loads((self.dir / FIELDS_FILE).read_text()))
        self.params = json.loads((self.dir / PARAMS_FILE).read_text())
        self.has_numeric = INPUT_NUMERIC in [i.name for i in self.session.get_inputs()]

    def predict_encoded(self, feature_ids: np.ndarray, numeric: np.ndarray | None = None) -> np.ndarray:
        feeds = {INPUT_IDS: np.ascontiguousarray(feature_ids, dtype=np.int64)}
        if self.has_numeric:
            if numeric is None:
                raise ValueError("this model needs the numeric input")
            feeds[INPUT_NUMERIC] = np.ascontiguousarray(numeric, dtype=np.float32)
        (prob,) = self.session.run([OUTPUT], feeds)
        return prob

    def predict_rows(self, rows: list[dict[str, object]]) -> tuple[np.ndarray, dict[str, int]]:
        ids, numeric, unknown = encode_rows(self.spec, rows)
        return self.predict_encoded(ids, numeric), unknown


def benchmark(
    scorer: OnnxCTRScorer,
    model: CalibratedCTR,
    feature_ids: np.ndarray,
    numeric: np.ndarray | None,
    batch_sizes: tuple[int, ...] = (1, 64, 512),
    repeats: int = 50,
) -> list[dict[str, float]]:
    """Median latency (ms) per batch of ONNX Runtime and torch eager on the same rows, one thread each."""
    rows = []
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for b in batch_sizes:
            ids = np.resize(feature_ids, (b, feature_ids.shape[1]))
            num = None if numeric is None else np.resize(numeric, (b, numeric.shape[1]))
            t_ids = torch.from_numpy(ids)
            t_num = None if num is None else torch.from_numpy(num)
            timings: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
            for _ in range(5):  # warm-up
                scorer.predict_encoded(ids, num)
                with torch.no_grad():
                    model(t_ids, t_num)
            for _ in range(repeats):
                t0 = time.perf_counter()
                scorer.predict_encoded(ids, num)
                timings["onnxruntime"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                with torch.no_grad():
                    model(t_ids, t_num)
                timings["torch"].append(time.perf_counter() - t0)
            rows.append(
                {
                    "batch": b,
                    "onnxruntime_ms": 1e3 * float(np.median(timings["onnxruntime"])),
                    "torch_ms": 1e3 * float(np.median(timings["torch"])),
                }
            )
    finally:
        torch.set_num_threads(prev)
    return rows
