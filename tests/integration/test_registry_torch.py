"""A model exported the way trainers export (``torch.onnx.export(dynamo=True)``) registers, verifies and serves.

The dynamo exporter writes ``model.onnx`` plus ``model.onnx.data`` (external weights); the
registry must ship and hash both and ONNX Runtime must load the copy. The kit's ModelLoader
(the services' consumer of the registry) then serves it through an alias.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_store.versions import VersionCatalog
from models.registry import ModelRegistry
from tests.conftest import make_settings
from tests.unit.test_registry_artifacts import make_features

N_ITEMS, DIM, TOP_K, SEQ_LEN = 30, 8, 5, 6


def export_torch_model(out: Path) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class TinySeq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(N_ITEMS + 1, DIM)
            self.proj = torch.nn.Linear(DIM, DIM)

        def forward(self, item_seq, lte, exclude):  # type: ignore[no-untyped-def]
            h = self.emb(item_seq).mean(dim=1) + self.proj(lte)
            scores = (h @ self.emb.weight.T).masked_fill(exclude, -1e9)
            return torch.topk(scores, TOP_K, dim=1)

    torch.manual_seed(0)
    out.mkdir(parents=True)
    args = (
        torch.ones(2, SEQ_LEN, dtype=torch.int64),
        torch.zeros(2, DIM),
        torch.zeros(2, N_ITEMS + 1, dtype=torch.bool),
    )
    torch.onnx.export(
        TinySeq().eval(),
        args,
        str(out / "model.onnx"),
        dynamo=True,
        input_names=["item_seq", "lte", "exclude"],
        output_names=["scores", "items"],
        dynamic_shapes={"item_seq": {0: "batch", 1: "seq_len"}, "lte": {0: "batch"}, "exclude": {0: "batch"}},
        verbose=False,
    )
    (out / "item_index.json").write_text(json.dumps([""] + [f"item-{i}" for i in range(1, N_ITEMS + 1)]))
    return out


@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
def test_dynamo_export_with_external_weights_registers_and_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECSYS_REGISTRY_URL", raising=False)
    art = export_torch_model(tmp_path / "art")
    assert (art / "model.onnx.data").is_file(), "the dynamo exporter is expected to write external weights"
    settings = make_settings(tmp_path / "data")
    make_features(settings)
    reg = ModelRegistry(url=None, data_dir=settings.data_dir, catalog=VersionCatalog(settings.catalog_dir))
    assert reg.url == f"sqlite:///{settings.data_dir / 'registry.db'}"  # the default store
    m = reg.register(
        family="sequential",
        name="seq-torch",
        artifact_dir=art,
        feature_refs=["lte_avg@v1", "recent_items@v1"],
        training={"dataset": "test"},
        params={"top_k": TOP_K, "lte_dim": DIM},
    )
    assert m.onnx_data_files == ("model.onnx.data",)
    assert m.files["model.onnx.data"].size == (art / "model.onnx.data").stat().st_size
    assert {t.name: t.dtype for t in m.inputs} == {"item_seq": "int64", "lte": "float32", "exclude": "bool"}
    assert m.inputs[0].shape == ("batch", "seq_len")
    reg.set_alias("seq-torch", "champion", m.version, actor="test")

    from services.kit.models import ModelLoader

    loaded = ModelLoader(reg).get("seq-torch", "champion")
    feeds = {
        "item_seq": np.array([[0, 0, 1, 2, 3, 4]], dtype=np.int64),
        "lte": np.zeros((1, DIM), dtype=np.float32),
        "exclude": np.eye(1, N_ITEMS + 1, dtype=bool),
    }
    scores, items = loaded.run(feeds)
    assert scores.shape == items.shape == (1, TOP_K)
    assert np.all(np.diff(scores[0]) <= 0) and 0 not in items[0]
    reg.close()
