"""SASRec with an optional Long-Term-Embedding (LTE) prefix token, in one readable file.

The model is a causal transformer over a user's recent items (SASRec, Kang & McAuley 2018) with
one addition (after Zalando's long-term embeddings): a **prefix token** made from the user's LTE.

Token layout for one user (left-padded, most recent item last)::

    [ LTE ] [ pad ] [ pad ] [ i_1 ] [ i_2 ] ... [ i_n ]
       ^ prefix (variants "avg" / "ae" only)

* The prefix is ``Linear(lte_dim -> hidden)(lte) + lte_type`` (a learned "this is an LTE" type
  embedding). It sits at position 0 of a plain causal mask, so every item position can attend to
  it, while it attends only to itself: the long-term summary conditions every prediction, and no
  item leaks into it.
* Item positions use a causal mask (a position never sees a later item) and never attend to padding.
* Positions are counted from the right (0 = most recent item), so a batch can be trimmed to its
  longest real sequence without changing any position embedding; left padding plus a fixed
  ``max_len`` gives exactly SASRec's absolute positions.
* The output of position ``k`` predicts item ``k + 1``; the prefix output predicts the first item
  (and is the whole prediction for a user with no recent items: the LTE alone).
* Scores are dot products with the (tied) item embedding table, as in SASRec.

Variant ``"none"`` is the plain SASRec baseline: no prefix and no ``lte`` input at all.

:class:`Exportable` wraps a trained model for serving: it scores the last position, masks the
``exclude`` items (and padding index 0) to ``-inf`` and returns the top ``K`` inside the graph,
so ONNX Runtime returns ``(scores, items)`` and the service never sees a catalogue-wide vector.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Variant = Literal["none", "avg", "ae"]
VARIANTS: tuple[str, ...] = ("none", "avg", "ae")


@dataclass
class SASRecConfig:
    """Shape and regularisation of the model; saved next to the weights so a checkpoint rebuilds itself."""

    n_items: int  # real items are 1..n_items; index 0 is padding
    max_len: int = 50
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    lte_dim: int | None = None  # required for "avg" / "ae", must be None for "none"
    variant: str = "none"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "none" and self.lte_dim is not None:
            raise ValueError("variant 'none' has no LTE input; lte_dim must be None")
        if self.variant != "none" and not self.lte_dim:
            raise ValueError(f"variant {self.variant!r} needs lte_dim")
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        if self.n_items < 1 or self.max_len < 1:
            raise ValueError("n_items and max_len must be positive")

    @property
    def has_lte(self) -> bool:
        return self.variant != "none"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with an explicit boolean mask (True = may attend).

    Written out (no ``nn.MultiheadAttention``) so the ONNX graph is plain MatMul/Softmax, which
    exports cleanly and which dynamic INT8 quantization understands.
    """

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)
        k = k.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)
        v = v.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.n_heads)
        # A large negative rather than -inf: every row keeps at least its own diagonal, but a finite
        # fill also keeps a fully masked row (never produced here) from turning into NaN.
        att = att.masked_fill(~allowed.unsqueeze(1), -1e9)
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (nanoGPT layout): x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden, 4 * cfg.hidden),
            nn.GELU(),
            nn.Linear(4 * cfg.hidden, cfg.hidden),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.mlp(self.ln2(x))


class SASRec(nn.Module):
    """Causal transformer over item sequences, optionally prefixed by an LTE token."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        if cfg.has_lte:
            assert cfg.lte_dim is not None
            self.lte_proj = nn.Linear(cfg.lte_dim, cfg.hidden)
            self.lte_type = nn.Parameter(torch.zeros(cfg.hidden))
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_blocks))
        self.ln_f = nn.LayerNorm(cfg.hidden)
        self.apply(self._init_weights)
        if cfg.has_lte:
            nn.init.normal_(self.lte_type, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @property
    def n_prefix(self) -> int:
        """Tokens before the items: 1 with an LTE prefix, else 0."""
        return 1 if self.cfg.has_lte else 0

    def forward(self, item_seq: torch.Tensor, lte: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``[B, n_prefix + L, hidden]`` for ``item_seq`` ``[B, L]`` (and ``lte`` ``[B, D]``).

        Output ``j`` (in token order, prefix first) is the representation that predicts the item
        following token ``j``.
        """
        seq_len = item_seq.shape[1]
        if self.cfg.has_lte and lte is None:
            raise ValueError(f"variant {self.cfg.variant!r} needs an lte input")
        if not self.cfg.has_lte and lte is not None:
            raise ValueError("variant 'none' takes no lte input")
        # Position 0 = most recent item; trimming left padding leaves every real item's position unchanged.
        positions = torch.arange(seq_len - 1, -1, -1, device=item_seq.device)
        x = self.item_emb(item_seq) * math.sqrt(self.cfg.hidden) + self.pos_emb(positions).unsqueeze(0)
        real = item_seq != 0  # [B, L]
        if self.cfg.has_lte:
            assert lte is not None
            prefix = (self.lte_proj(lte) + self.lte_type).unsqueeze(1)  # [B, 1, H]
            x = torch.cat([prefix, x], dim=1)
            real = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)
        x = self.emb_drop(x)
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=x.device)
        # Causal (the prefix at token 0 is therefore visible to all), padding keys hidden, and the
        # diagonal always allowed so padded query rows stay finite (their outputs are never used).
        allowed = (causal.unsqueeze(0) & real.unsqueeze(1)) | eye.unsqueeze(0)  # [B, T, T]
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over the whole catalogue (column 0 = padding) from hidden states ``[..., H]``."""
        return h @ self.item_emb.weight.T

    def last_hidden(self, item_seq: torch.Tensor, lte: torch.Tensor | None = None) -> torch.Tensor:
        """The representation that predicts the next item: ``[B, H]``.

        The last item position; for a user whose sequence is all padding, the prefix output (the
        prediction from the LTE alone) in the LTE variants.
        """
        h = self.forward(item_seq, lte)
        last = h[:, -1]
        if self.cfg.has_lte:
            empty = (item_seq[:, -1] == 0).unsqueeze(1)
            last = torch.where(empty, h[:, 0], last)
        return last

    def score(self, item_seq: torch.Tensor, lte: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item scores ``[B, n_items + 1]`` (raw: nothing excluded)."""
        return self.item_logits(self.last_hidden(item_seq, lte))


def masked_topk(scores: torch.Tensor, exclude: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of ``scores`` after setting excluded items and padding (index 0) to ``-inf``."""
    scores = scores.masked_fill(exclude, float("-inf"))
    scores = torch.cat([torch.full_like(scores[:, :1], float("-inf")), scores[:, 1:]], dim=1)
    return torch.topk(scores, k, dim=1, largest=True, sorted=True)


class Exportable(nn.Module):
    """Serving graph for the LTE variants: ``(item_seq, lte, exclude) -> (scores, items)``, top-k inside.

    ``exclude`` is ``[B, n_items + 1]`` bool (True = never recommend: seen items); index 0 is
    excluded regardless. ``top_k`` is capped at ``n_items``. Use :func:`exportable` to get the
    right wrapper for a model (the ``"none"`` variant has no ``lte`` input).
    """

    def __init__(self, model: SASRec, top_k: int = 100) -> None:
        super().__init__()
        if not model.cfg.has_lte:
            raise ValueError("variant 'none' has no lte input; use ExportableNoLTE (or exportable())")
        self.model = model
        self.top_k = min(top_k, model.cfg.n_items)

    def forward(
        self, item_seq: torch.Tensor, lte: torch.Tensor, exclude: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores, items = masked_topk(self.model.score(item_seq, lte), exclude, self.top_k)
        return scores, items


class ExportableNoLTE(nn.Module):
    """Serving graph for the SASRec baseline: ``(item_seq, exclude) -> (scores, items)``."""

    def __init__(self, model: SASRec, top_k: int = 100) -> None:
        super().__init__()
        if model.cfg.has_lte:
            raise ValueError(f"variant {model.cfg.variant!r} needs the lte input; use Exportable")
        self.model = model
        self.top_k = min(top_k, model.cfg.n_items)

    def forward(self, item_seq: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, items = masked_topk(self.model.score(item_seq), exclude, self.top_k)
        return scores, items


def exportable(model: SASRec, top_k: int = 100) -> Exportable | ExportableNoLTE:
    """The serving wrapper matching the model's variant (in eval mode)."""
    wrapper = Exportable(model, top_k) if model.cfg.has_lte else ExportableNoLTE(model, top_k)
    return wrapper.eval()


def save_checkpoint(model: SASRec, path: str) -> None:
    """Weights and config in one file, so :func:`load_checkpoint` needs nothing else."""
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict()}, path)


def load_checkpoint(path: str) -> SASRec:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = SASRec(SASRecConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval()
