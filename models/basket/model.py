"""CASE for next-basket repurchase, in one readable file.

CASE (public reference code ``ycao21/CASE_NBRR``) scores a user's candidate items from their
purchase history on the *calendar*, not in visit order:

1. **Calendar signal per candidate**: a binary purchase-day vector over a fixed horizon (364 days),
   ending the day before the as-of day (built by :mod:`models.basket.features`).
2. **Multi-scale temporal convolutions**: one Conv1d per scale, shared by all items, kernels
   7/14/28/90/180 days with stride = kernel, so each output is "was it bought in that week /
   fortnight / month / quarter / half-year". The outputs are concatenated (52+26+13+4+2 = 97)
   and an MLP maps them to 128 (97 -> 128 -> 128).
3. **Item representation**: that temporal code next to a learned item embedding (128), projected
   to the set width (256).
4. **Cross-item dependencies**: two induced set attention blocks (ISAB, Set Transformer; hidden
   256, 4 heads, 32 inducing points). Each block lets 32 learned inducing points attend to the n
   candidates and the candidates attend back to them: O(n * 32), linear in the number of items
   (a full self-attention would be O(n^2)). Padding candidates are masked as keys everywhere.
   The set that the blocks summarise is the user's *bought* candidates (rows with a purchase in the
   window, :func:`context_mask`); explore candidates read that summary but are not part of it.
5. **User vector**: PMA pooling (one seed, 4 heads) of the set, projected to the embedding width.
6. **Score** = a learned per-item mix (softmax over a per-item weight pair) of an *intrinsic*
   score (an MLP on the candidate's set representation) and a *compatibility* score
   (user vector . item embedding).

Ablations (``CASEConfig.temporal``):

* ``"cnn"``: the model above (the default and the served model).
* ``"none"``: no temporal convolutions; the only per-candidate signal from the matrix is one bit
  "bought in the window" (so the model can still tell repeat from explore candidates). This is the
  "without the temporal CNN" ablation of the reference work.
* ``"count"``: the matrix reduced to log(1 + purchase days) plus that bit: frequency without timing.

Inputs and output match the ONNX contract (:mod:`models.basket.export`): ``purchase_days``
float32 ``[B, N, H]``, ``item_ids`` int64 ``[B, N]`` (0 = padding), ``item_mask`` float32 ``[B, N]``;
``scores`` float32 ``[B, N]`` (logits; padding gets :data:`PAD_SCORE`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

TEMPORAL_VARIANTS: tuple[str, ...] = ("cnn", "none", "count")
PAD_SCORE = -1.0e9  # score of padding candidates: below any real logit


@dataclass
class CASEConfig:
    """Shape of the model; saved with the weights so a checkpoint rebuilds itself."""

    n_items: int  # real items are 1..n_items; index 0 is padding
    horizon: int = 364
    kernels: tuple[int, ...] = (7, 14, 28, 90, 180)
    temporal: str = "cnn"  # "cnn" | "none" | "count" (ablations)
    temporal_dim: int = 128
    item_dim: int = 128
    set_dim: int = 256
    n_heads: int = 4
    n_inducing: int = 32
    n_isab: int = 2
    pma_heads: int = 4
    dropout: float = 0.1
    extra: dict[str, object] = field(default_factory=dict)  # free-form notes (not used by the model)

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORAL_VARIANTS:
            raise ValueError(f"temporal must be one of {TEMPORAL_VARIANTS}, got {self.temporal!r}")
        if self.set_dim % self.n_heads or self.set_dim % self.pma_heads:
            raise ValueError("set_dim must be divisible by n_heads and pma_heads")
        if any(k > self.horizon for k in self.kernels):
            raise ValueError(f"every kernel must fit in the horizon ({self.horizon})")
        self.kernels = tuple(int(k) for k in self.kernels)

    @property
    def conv_out(self) -> int:
        """Length of the concatenated convolution outputs (97 for the reference settings)."""
        return sum(self.horizon // k for k in self.kernels)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["kernels"] = list(self.kernels)
        return d


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a key mask, written out so the ONNX graph is plain MatMul/Softmax."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, nq, d = query.shape
        nk = keys.shape[1]
        h = self.n_heads
        q = self.q(query).reshape(b, nq, h, d // h).transpose(1, 2)
        k = self.k(keys).reshape(b, nk, h, d // h).transpose(1, 2)
        v = self.v(keys).reshape(b, nk, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)  # [B, h, nq, nk]
        if key_mask is not None:
            # Finite fill: a user with no real candidate gets a uniform (unused) average, not NaN.
            att = att.masked_fill(key_mask[:, None, None, :] <= 0, -1.0e9)
        y = (F.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, nq, d)
        return self.out(y)


class MAB(nn.Module):
    """Multihead attention block (Set Transformer): H = LN(Q + MHA(Q, K)); out = LN(H + FF(H))."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, n_heads)
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.ln1(query + self.drop(self.attn(query, keys, key_mask)))
        return self.ln2(h + self.drop(self.ff(h)))


class ISAB(nn.Module):
    """Induced set attention: inducing points summarise the set, then the set reads the summary (O(n * m))."""

    def __init__(self, dim: int, n_heads: int, n_inducing: int, dropout: float) -> None:
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(1, n_inducing, dim) / math.sqrt(dim))
        self.summarise = MAB(dim, n_heads, dropout)
        self.read = MAB(dim, n_heads, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        summary = self.summarise(self.inducing.expand(x.shape[0], -1, -1), x, mask)
        return self.read(x, summary, None)


class PMA(nn.Module):
    """Pooling by multihead attention with one learned seed: the user vector."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.seed = nn.Parameter(torch.randn(1, 1, dim) / math.sqrt(dim))
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.mab = MAB(dim, n_heads, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mab(self.seed.expand(x.shape[0], -1, -1), self.ff(x), mask)[:, 0]


class TemporalEncoder(nn.Module):
    """Per-candidate calendar code ``[B, N, temporal_dim]`` from the purchase-day matrix ``[B, N, H]``."""

    def __init__(self, cfg: CASEConfig) -> None:
        super().__init__()
        self.variant = cfg.temporal
        self.horizon = cfg.horizon
        if cfg.temporal == "cnn":
            # One shared single-channel Conv1d per scale; stride = kernel gives non-overlapping bins.
            self.convs = nn.ModuleList(nn.Conv1d(1, 1, k, stride=k) for k in cfg.kernels)
            n_in = cfg.conv_out
        else:
            n_in = 1 if cfg.temporal == "none" else 2
        self.mlp = nn.Sequential(
            nn.Linear(n_in, cfg.temporal_dim), nn.ReLU(), nn.Linear(cfg.temporal_dim, cfg.temporal_dim)
        )

    def forward(self, purchase_days: torch.Tensor) -> torch.Tensor:
        b, n, h = purchase_days.shape
        bought = (purchase_days.amax(dim=-1, keepdim=True) > 0).to(purchase_days.dtype)
        if self.variant == "cnn":
            flat = purchase_days.reshape(b * n, 1, h)
            feats = torch.cat([conv(flat).flatten(1) for conv in self.convs], dim=1).reshape(b, n, -1)
        elif self.variant == "count":
            feats = torch.cat([torch.log1p(purchase_days.sum(dim=-1, keepdim=True)), bought], dim=-1)
        else:
            feats = bought
        return self.mlp(feats)


class CASE(nn.Module):
    """Calendar-aware set encoder: ``(purchase_days, item_ids, item_mask) -> scores [B, N]``."""

    def __init__(self, cfg: CASEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.temporal = TemporalEncoder(cfg)
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.item_dim, padding_idx=0)
        self.project = nn.Sequential(nn.Linear(cfg.temporal_dim + cfg.item_dim, cfg.set_dim), nn.ReLU())
        self.isabs = nn.ModuleList(
            ISAB(cfg.set_dim, cfg.n_heads, cfg.n_inducing, cfg.dropout) for _ in range(cfg.n_isab)
        )
        self.pma = PMA(cfg.set_dim, cfg.pma_heads, cfg.dropout)
        self.user_proj = nn.Linear(cfg.set_dim, cfg.item_dim)
        self.intrinsic = nn.Sequential(nn.Linear(cfg.set_dim, cfg.item_dim), nn.ReLU(), nn.Linear(cfg.item_dim, 1))
        # Per-item mix logits (intrinsic, compatibility); zeros = an even mix at the start.
        self.mix = nn.Embedding(cfg.n_items + 1, 2)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.zeros_(self.mix.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, purchase_days: torch.Tensor, item_ids: torch.Tensor, item_mask: torch.Tensor) -> torch.Tensor:
        emb = self.item_emb(item_ids)  # [B, N, E]
        x = self.project(torch.cat([self.temporal(purchase_days), emb], dim=-1))  # [B, N, D]
        context = context_mask(purchase_days, item_mask)
        for isab in self.isabs:
            x = isab(x, context)
        user = self.user_proj(self.pma(x, context))  # [B, E]
        intrinsic = self.intrinsic(x).squeeze(-1)  # [B, N]
        compat = (emb * user.unsqueeze(1)).sum(dim=-1) / math.sqrt(self.cfg.item_dim)
        weights = F.softmax(self.mix(item_ids), dim=-1)  # [B, N, 2]
        scores = weights[..., 0] * intrinsic + weights[..., 1] * compat
        return scores.masked_fill(item_mask <= 0, PAD_SCORE)


def context_mask(purchase_days: torch.Tensor, item_mask: torch.Tensor) -> torch.Tensor:
    """Which candidates the set encoder summarises: real candidates bought inside the window.

    Explore candidates (all-zero rows) only *read* the summary. That keeps every candidate's score
    independent of how many explore candidates are scored next to it, so training on a few sampled
    negatives and serving a long explore list see the same context. A user with nothing in the
    window falls back to all real candidates (so attention never runs over an empty set).
    """
    bought = (purchase_days.amax(dim=-1) > 0).to(item_mask.dtype) * item_mask
    has_any = bought.sum(dim=-1, keepdim=True) > 0
    return torch.where(has_any, bought, item_mask)


def save_checkpoint(model: CASE, path: str, extra: dict[str, object] | None = None) -> None:
    """Weights, config and any extra metadata (explore list, n_explore) in one file."""
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), "extra": extra or {}}, path)


def load_checkpoint(path: str) -> tuple[CASE, dict[str, object]]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dict(blob["config"])
    cfg["kernels"] = tuple(cfg["kernels"])
    model = CASE(CASEConfig(**cfg))
    model.load_state_dict(blob["state_dict"])
    return model.eval(), dict(blob.get("extra", {}))
