"""ONNX Runtime session settings: one place for the evaluation harness, benchmarks and the services.

One intra-op thread by default: on this 2-core machine, two intra-op threads collapsed when another
process held the other core (their spin-waits fight for it); services scale with worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def session_options(threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def inference_session(path: Path | str, threads: int = 1) -> Any:
    """A CPU session over ``path`` (an external ``.onnx.data`` file next to it is found by ORT)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"])
