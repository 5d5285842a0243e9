"""Family contracts: the ONNX signature each recommender family must export.

The registry refuses a model whose graph does not match its family's contract, and services
rely on these names. Shapes use symbolic names for dynamic axes.

sequential (SASRec-style with an optional LTE prefix token):
  inputs
    item_seq  int64   [batch, seq_len]   item indices 1..n_items, 0 = padding, left-padded, most recent last
    lte       float32 [batch, lte_dim]   the pinned LTE vector (zeros when the user has none); absent for the
                                         no-LTE baseline
    exclude   bool    [batch, n_items+1] True = never recommend (seen items, padding index 0)
  outputs
    scores    float32 [batch, top_k]     descending
    items     int64   [batch, top_k]     item indices; map back with the artifact's item_index.json
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorContract:
    name: str
    dtype: str  # numpy dtype name as ONNX Runtime reports it: "int64", "float32", "bool"
    rank: int
    required: bool = True


@dataclass(frozen=True)
class FamilyContract:
    family: str
    inputs: tuple[TensorContract, ...]
    outputs: tuple[TensorContract, ...]
    # Files besides the ONNX graph the artifact must contain.
    required_files: tuple[str, ...] = ()


CONTRACTS: dict[str, FamilyContract] = {
    "sequential": FamilyContract(
        family="sequential",
        inputs=(
            TensorContract("item_seq", "int64", 2),
            TensorContract("lte", "float32", 2, required=False),
            TensorContract("exclude", "bool", 2),
        ),
        outputs=(TensorContract("scores", "float32", 2), TensorContract("items", "int64", 2)),
        required_files=("item_index.json",),
    ),
}
