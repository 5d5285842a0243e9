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

ctr (a click-probability ranker: SSR, DCNv2, DeepFM, FM, LR over one-hot fields):
  inputs
    feature_ids  int64   [batch, n_categorical]  global ids (the field's offset added); fields.json maps raw values
    numeric      float32 [batch, n_numeric]      only when the model has numeric fields (Criteo)
  outputs
    probability  float32 [batch]                 calibrated click probability
  files: fields.json (vocabularies, offsets, out-of-vocabulary ids), params.json (incl. where each field comes from)

basket (CASE: next-basket repurchase over a user's candidate items):
  inputs
    purchase_days  float32 [batch, n_candidates, 364]  1 on days with a purchase, newest day last
    item_ids       int64   [batch, n_candidates]       item indices, 0 = padding
    item_mask      float32 [batch, n_candidates]       1 = real candidate
  outputs
    scores         float32 [batch, n_candidates]       padding scores very low
  files: item_index.json
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
    "ctr": FamilyContract(
        family="ctr",
        inputs=(TensorContract("feature_ids", "int64", 2), TensorContract("numeric", "float32", 2, required=False)),
        outputs=(TensorContract("probability", "float32", 1),),
        required_files=("fields.json", "params.json"),
    ),
    "basket": FamilyContract(
        family="basket",
        inputs=(
            TensorContract("purchase_days", "float32", 3),
            TensorContract("item_ids", "int64", 2),
            TensorContract("item_mask", "float32", 2),
        ),
        outputs=(TensorContract("scores", "float32", 2),),
        required_files=("item_index.json",),
    ),
}
