"""SASRec + LTE prefix: the attention structure (prefix visible to all, causal items), variants, serving wrapper."""

from __future__ import annotations

import inspect

import pytest
import torch

from models.sequential.model import (
    Exportable,
    ExportableNoLTE,
    SASRec,
    SASRecConfig,
    exportable,
    load_checkpoint,
    save_checkpoint,
)
from models.sequential.train import TrainConfig, batch_loss, position_targets

N_ITEMS, L, D = 40, 8, 6


def _model(variant: str = "avg", seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    cfg = SASRecConfig(
        n_items=N_ITEMS,
        max_len=L,
        hidden=16,
        n_blocks=2,
        n_heads=2,
        dropout=0.0,
        lte_dim=None if variant == "none" else D,
        variant=variant,
    )
    return SASRec(cfg).eval()


def _batch(b: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, N_ITEMS + 1, (b, L), generator=g)
    seq[0, :3] = 0  # left padding
    seq[1, :6] = 0
    return seq


@torch.no_grad()
def test_prefix_token_is_visible_to_every_item_position() -> None:
    model = _model("avg")
    seq = _batch()
    lte = torch.randn(len(seq), D)
    h1 = model(seq, lte)
    h2 = model(seq, lte + torch.randn_like(lte))
    diff = (h1 - h2).abs().amax(dim=-1)[:, 1:]  # item positions only
    real = seq != 0
    assert bool((diff[real] > 1e-5).all()), "changing the LTE must change the output at every real item position"


@torch.no_grad()
def test_items_are_causal_and_do_not_reach_the_prefix() -> None:
    model = _model("avg")
    seq = _batch()
    lte = torch.randn(len(seq), D)
    k = 5  # perturb the item at column k
    other = seq.clone()
    other[:, k] = (seq[:, k] % N_ITEMS) + 1
    h1, h2 = model(seq, lte), model(other, lte)
    # token index = column + 1 (prefix first); everything before column k is unchanged, incl. the prefix
    torch.testing.assert_close(h1[:, : k + 1], h2[:, : k + 1], atol=1e-6, rtol=0)
    assert bool(((h1[2:, k + 1 :] - h2[2:, k + 1 :]).abs().amax(dim=-1) > 1e-6).all())


@torch.no_grad()
def test_baseline_is_causal_too() -> None:
    model = _model("none")
    seq = _batch()
    other = seq.clone()
    other[:, 6] = (seq[:, 6] % N_ITEMS) + 1
    torch.testing.assert_close(model(seq)[:, :6], model(other)[:, :6], atol=1e-6, rtol=0)


def test_variant_none_has_no_lte_input() -> None:
    model = _model("none")
    assert not hasattr(model, "lte_proj")
    with pytest.raises(ValueError):
        model(_batch(), torch.zeros(5, D))
    wrapper = exportable(model)
    assert isinstance(wrapper, ExportableNoLTE)
    assert list(inspect.signature(wrapper.forward).parameters) == ["item_seq", "exclude"]
    with pytest.raises(ValueError):
        Exportable(model)
    with pytest.raises(ValueError):
        SASRecConfig(n_items=5, variant="none", lte_dim=4)
    with pytest.raises(ValueError):
        SASRecConfig(n_items=5, variant="avg")
    with pytest.raises(ValueError):
        _model("avg")(_batch())  # an LTE variant refuses to run without its LTE


@torch.no_grad()
def test_left_padding_can_be_trimmed_without_changing_outputs() -> None:
    """Positions count from the right, so a batch cut to its longest sequence gives the same result."""
    model = _model("avg")
    seq = _batch()
    seq[:, :2] = 0
    lte = torch.randn(len(seq), D)
    torch.testing.assert_close(model.score(seq, lte), model.score(seq[:, 2:], lte), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_exportable_topk_masks_excluded_and_padding() -> None:
    model = _model("avg")
    seq = _batch()
    seq[4] = 0  # no recent items at all: the prediction comes from the LTE alone
    lte = torch.randn(len(seq), D)
    exclude = torch.zeros(len(seq), N_ITEMS + 1, dtype=torch.bool)
    exclude[:, 1:10] = True
    scores, items = Exportable(model, top_k=10)(seq, lte, exclude)
    assert scores.shape == items.shape == (len(seq), 10)
    assert bool((items >= 10).all()), "excluded items (1..9) and padding (0) never appear"
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    h = model(seq, lte)
    torch.testing.assert_close(model.last_hidden(seq, lte)[4], h[4, 0])  # empty sequence -> prefix output
    assert exportable(model, top_k=10_000).top_k == N_ITEMS


def test_position_targets_shift_and_prefix() -> None:
    seq = torch.tensor([[0, 0, 3, 4], [0, 0, 0, 0]])
    tgt = torch.tensor([5, 7])
    assert position_targets(seq, tgt, prefix=False).tolist() == [[0, 0, 4, 5], [0, 0, 0, 0]]
    # the prefix predicts the first real item (or the target when the sequence is empty)
    assert position_targets(seq, tgt, prefix=True).tolist() == [[3, 0, 0, 4, 5], [7, 0, 0, 0, 0]]


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_losses_are_finite_and_differentiable(loss: str) -> None:
    model = _model("avg").train()
    seq = _batch()
    value = batch_loss(model, seq, torch.randint(1, N_ITEMS + 1, (5,)), torch.randn(5, D), TrainConfig(loss=loss))
    value.backward()
    assert torch.isfinite(value)
    assert model.lte_proj.weight.grad is not None and model.lte_proj.weight.grad.abs().sum() > 0


def test_checkpoint_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _model("ae")
    save_checkpoint(model, str(tmp_path / "m.pt"))
    again = load_checkpoint(str(tmp_path / "m.pt"))
    seq, lte = _batch(), torch.randn(5, D)
    with torch.no_grad():
        torch.testing.assert_close(model.score(seq, lte), again.score(seq, lte))
    assert again.cfg == model.cfg
