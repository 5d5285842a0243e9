"""Artifact checks of the model registry (no database), plus the builders the other registry tests share.

Models are built with onnx.helper: a real, runnable sequential recommender graph (embedding
mean + LTE, masked scores, TopK) in a few milliseconds, with knobs that break the contract in
one specific way each.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from feature_store.build import lte_fields, window_of, write_version
from feature_store.config import FeatureStoreSettings
from feature_store.versions import FeatureField, FeatureVersion
from models.contracts import CONTRACTS
from models.registry import ArtifactTampered, ModelManifest, RegistrationError, TensorSpec
from models.registry.artifacts import (
    check_external_data,
    contract_problems,
    copy_and_hash,
    external_data_locations,
    load_signature,
    ort_dtype,
    verify_artifact,
)

N_ITEMS = 20
DIM = 4
TOP_K = 3


def seq_model(
    *,
    lte: bool = True,
    exclude: bool = True,
    items_dtype: int = TensorProto.INT64,
    lte_rank: int = 2,
    extra_input: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """A runnable sequential graph: scores = mean(emb[item_seq]) (+ lte) @ emb.T, masked, top-k."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((N_ITEMS + 1, DIM)).astype(np.float32)
    inits = [
        numpy_helper.from_array(emb, "emb"),
        numpy_helper.from_array(np.ascontiguousarray(emb.T), "emb_t"),
        numpy_helper.from_array(np.array([TOP_K], dtype=np.int64), "k"),
        numpy_helper.from_array(np.array(-1e9, dtype=np.float32), "neg"),
    ]
    inputs = [helper.make_tensor_value_info("item_seq", TensorProto.INT64, ["batch", "seq_len"])]
    nodes = [
        helper.make_node("Gather", ["emb", "item_seq"], ["e"]),
        helper.make_node("ReduceMean", ["e"], ["h0"], axes=[1], keepdims=0),
    ]
    h = "h0"
    if lte:
        shape = ["batch", DIM] if lte_rank == 2 else [DIM]
        inputs.append(helper.make_tensor_value_info("lte", TensorProto.FLOAT, shape))
        nodes.append(helper.make_node("Add", ["h0", "lte"], ["h1"]))
        h = "h1"
    nodes.append(helper.make_node("MatMul", [h, "emb_t"], ["s0"]))
    s = "s0"
    if exclude:
        inputs.append(helper.make_tensor_value_info("exclude", TensorProto.BOOL, ["batch", N_ITEMS + 1]))
        nodes.append(helper.make_node("Where", ["exclude", "neg", "s0"], ["s1"]))
        s = "s1"
    if extra_input:
        inputs.append(helper.make_tensor_value_info("user_age", TensorProto.FLOAT, ["batch", 1]))
        nodes.append(helper.make_node("Add", [s, "user_age"], ["s2"]))
        s = "s2"
    items_name = "items" if items_dtype == TensorProto.INT64 else "items_i64"
    nodes.append(helper.make_node("TopK", [s, "k"], ["scores", items_name], axis=1))
    if items_dtype != TensorProto.INT64:
        nodes.append(helper.make_node("Cast", [items_name], ["items"], to=items_dtype))
    outputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", TOP_K]),
        helper.make_tensor_value_info("items", items_dtype, ["batch", TOP_K]),
    ]
    graph = helper.make_graph(nodes, "seq", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@cache
def _model_bytes(**kw: object) -> bytes:
    return seq_model(**kw).SerializeToString()  # type: ignore[arg-type]


def make_artifact(
    root: Path, *, external: bool = False, item_index: bool = True, extra: dict[str, str] | None = None, **kw: object
) -> Path:
    """An artifact dir: model.onnx (optionally with model.onnx.data), item_index.json, extra files."""
    root.mkdir(parents=True, exist_ok=True)
    if external:
        model = seq_model(**kw)  # type: ignore[arg-type]
        onnx.save_model(
            model,
            str(root / "model.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
            # The weights go out; the tiny TopK ``k`` stays inline (shape inference must read it).
            size_threshold=64,
        )
    else:
        (root / "model.onnx").write_bytes(_model_bytes(**kw))
    if item_index:
        (root / "item_index.json").write_text(json.dumps([""] + [f"i{i}" for i in range(1, N_ITEMS + 1)]))
    for rel, text in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def make_features(settings: FeatureStoreSettings) -> dict[str, FeatureVersion]:
    """lte_avg@v1, lte_avg@v2 and recent_items@v1 in the settings' catalog (tiny parquet files)."""
    as_of = pd.Timestamp("2024-03-01", tz="UTC")
    window = window_of(as_of.to_pydatetime(), timedelta(days=7), timedelta(days=365), None, None)
    users = ["u1", "u2", "u3"]
    lte_frame = pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": [as_of] * 3,
            "lte": list(np.ones((3, DIM), dtype=np.float32)),
            "n_items": [1, 2, 3],
        }
    )
    out = {}
    for _ in range(2):
        spec = write_version(
            settings,
            view="lte_avg",
            entity="user",
            frame=lte_frame,
            fields=lte_fields(DIM),
            window=window,
            dataset="test",
            basis_fingerprint="fp-test-basis",
        )
        out[spec.ref] = spec
    recent = pd.DataFrame({"user_id": users, "event_timestamp": [as_of] * 3, "item_ids": [["i1"], ["i2"], []]})
    spec = write_version(
        settings,
        view="recent_items",
        entity="user",
        frame=recent,
        fields=[FeatureField(name="item_ids", dtype="string_list")],
        window=window,
        dataset="test",
    )
    out[spec.ref] = spec
    return out


# --- tests -------------------------------------------------------------------------------------------

SEQ = CONTRACTS["sequential"]


def test_builder_graph_runs_and_matches_contract(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "a")
    inputs, outputs = load_signature(art / "model.onnx")
    assert [str(t) for t in inputs] == [
        "item_seq int64 [batch, seq_len]",
        f"lte float32 [batch, {DIM}]",
        f"exclude bool [batch, {N_ITEMS + 1}]",
    ]
    assert [str(t) for t in outputs] == [f"scores float32 [batch, {TOP_K}]", f"items int64 [batch, {TOP_K}]"]
    assert contract_problems(SEQ, inputs, outputs) == []


def test_lte_is_optional_in_the_contract(tmp_path: Path) -> None:
    inputs, outputs = load_signature(make_artifact(tmp_path / "a", lte=False) / "model.onnx")
    assert contract_problems(SEQ, inputs, outputs) == []


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"exclude": False}, "input 'exclude' (bool, rank 2) is missing"),
        ({"items_dtype": TensorProto.FLOAT}, "output 'items' has dtype float32, expected int64"),
        ({"lte_rank": 1}, "input 'lte' has rank 1 [4], expected rank 2"),
        ({"extra_input": True}, "input 'user_age' is not part of the contract"),
    ],
)
def test_contract_problems_name_the_tensor(tmp_path: Path, kw: dict, expected: str) -> None:
    inputs, outputs = load_signature(make_artifact(tmp_path / "a", **kw) / "model.onnx")
    assert contract_problems(SEQ, inputs, outputs) == [expected]


def test_ort_dtype_names() -> None:
    assert ort_dtype("tensor(float)") == "float32"
    assert ort_dtype("tensor(int64)") == "int64"
    assert ort_dtype("tensor(bool)") == "bool"
    assert ort_dtype("seq(tensor(float))") == "seq(tensor(float))"


def test_unloadable_graph_reports_the_onnxruntime_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"definitely not protobuf")
    with pytest.raises(RegistrationError, match=r"model.onnx does not load in onnxruntime: .*(?i:protobuf|parse)"):
        load_signature(tmp_path / "model.onnx")


def test_external_data_is_found_and_must_be_shipped(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "a", external=True)
    assert external_data_locations(art / "model.onnx") == ["model.onnx.data"]
    assert [t.name for t in load_signature(art / "model.onnx")[1]] == ["scores", "items"]
    assert external_data_locations(make_artifact(tmp_path / "b") / "model.onnx") == []
    files = copy_and_hash(art, tmp_path / "staged")
    assert check_external_data("model.onnx", ["model.onnx.data"], files, art) == ["model.onnx.data"]
    del files["model.onnx.data"]
    with pytest.raises(RegistrationError, match=r"required file missing: model.onnx.data \(external weights"):
        check_external_data("model.onnx", ["model.onnx.data"], files, art)
    with pytest.raises(RegistrationError, match="outside the artifact"):
        check_external_data("model.onnx", ["../w.bin"], files, art)


def test_copy_and_hash_skips_hidden_files_and_makes_copies_read_only(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "a", extra={".DS_Store": "x", "sub/vocab.txt": "a\nb\n"})
    files = copy_and_hash(art, tmp_path / "staged")
    assert sorted(files) == ["item_index.json", "model.onnx", "sub/vocab.txt"]
    assert files["sub/vocab.txt"].size == 4
    assert not (tmp_path / "staged" / ".DS_Store").exists()
    assert (tmp_path / "staged" / "model.onnx").stat().st_mode & 0o777 == 0o444


def test_verify_artifact_lists_every_problem(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from models.registry.manifest import MANIFEST_FILE

    staged = tmp_path / "staged"
    files = copy_and_hash(make_artifact(tmp_path / "a"), staged)
    manifest = ModelManifest(
        family="sequential",
        name="m",
        version=1,
        created_at=datetime.now(UTC),
        onnx_file="model.onnx",
        onnx_sha256=files["model.onnx"].sha256,
        files=files,
        inputs=(TensorSpec(name="item_seq", dtype="int64", shape=("batch", "seq_len")),),
        outputs=(),
        training={"dataset": "test"},
    )
    (staged / MANIFEST_FILE).write_text(manifest.model_dump_json())
    verify_artifact(manifest, staged)
    index = staged / "item_index.json"
    index.chmod(0o644)
    index.write_text(index.read_text().replace("i1", "i9"))  # same size, different bytes
    (staged / "model.onnx").unlink()
    (staged / "evil.py").write_text("import os")
    with pytest.raises(ArtifactTampered) as exc:
        verify_artifact(manifest, staged)
    assert exc.value.problems == [
        "item_index.json sha256 differs from the manifest",
        "model.onnx is missing",
        "unexpected file evil.py",
    ]
    index.write_text("[]")
    with pytest.raises(
        ArtifactTampered, match=f"item_index.json has 2 bytes, manifest says {files['item_index.json'].size}"
    ):
        verify_artifact(manifest, staged)
