"""CTR rankers in one readable file: LR, FM, DeepFM, DCNv2, a deep MLP, and SSR (SSR-S / SSR-D).

Every model reads the same inputs and shares the same first layer:

* ``feature_ids`` int64 [B, n_categorical]: global ids (field offset already added, see
  :mod:`models.ctr.data`); one shared ``nn.Embedding`` gives a ``D``-vector per field;
* ``numeric`` float32 [B, n_numeric] (only when the data has numeric fields): each numeric field
  owns one ``D``-vector scaled by ``sign(x) * log1p(|x|)`` (the transform is in the graph, so a
  service sends raw numbers);
* first-order terms (LR, FM, DeepFM) come from a second, 1-wide embedding table.

``forward`` returns one logit per row; :class:`CalibratedCTR` adds the calibration and the
sigmoid for serving (output ``probability``).

SSR (Explicit Sparsity for Scalable Recommendation, AliExpress 2026; no public code or settings,
so this is our reading of the paper's description). Input: the flattened field embeddings
``x`` (``d = n_fields * D``). One SSR block = **filter, then fuse**:

1. ``V`` parallel views. Each view keeps only ``k = round(keep * d)`` of the ``d`` input
   dimensions and maps them with its own small dense layer to ``view_dim`` units (ReLU).

   * **SSR-S** (static random filter): view ``v`` keeps a fixed random subset ``S_v`` of the
     dimensions, drawn once from ``filter_seed`` and stored as a buffer. The view's weight is
     ``k x view_dim``: the sparsity is structural (fewer parameters and FLOPs than dense).
   * **SSR-D** (Iterative Competitive Sparse, ICS): per example and per view, the dimensions
     compete. The view scales the input by a learned gain (``u = g_v * x``), then runs ``T``
     rounds of lateral inhibition: every dimension's magnitude is reduced by
     ``sigmoid(a_v) * mean(|u|)`` (the mean response of the whole view), and what falls below
     zero is silenced (a soft threshold; differentiable almost everywhere). A final hard step
     keeps the ``k`` largest surviving responses. Which dimensions survive depends on the
     example, so the view's weight is ``d x view_dim`` (each row is used by some examples).

2. **Fuse**: the ``V * view_dim`` view outputs are concatenated and mixed by one dense layer
   to ``hidden`` units (ReLU, dropout). Blocks stack; the prediction head is a linear layer.

The dense backbone of DeepFM / DCNv2 / DNN is a plain MLP (``hidden`` widths, ReLU, dropout);
DCNv2 adds a full-rank cross network on ``x`` in parallel (``x_{l+1} = x_0 * (W x_l + b) + x_l``)
and a linear head on ``[cross, deep]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MODELS: tuple[str, ...] = ("lr", "fm", "deepfm", "dcnv2", "dnn", "ssr")
SSR_FILTERS: tuple[str, ...] = ("static", "ics")


@dataclass
class CTRConfig:
    """Architecture of one model; saved with its weights and in the artifact's params.json."""

    model: str
    n_features: int  # rows of the shared embedding table (FieldSpec.n_features)
    n_categorical: int
    n_numeric: int = 0
    embed_dim: int = 10
    hidden: tuple[int, ...] = (400, 400, 400)  # MLP widths (DeepFM, DCNv2, DNN)
    dropout: float = 0.1
    n_cross: int = 3  # DCNv2 cross layers
    # SSR
    ssr_filter: str = "static"  # "static" = SSR-S, "ics" = SSR-D
    ssr_blocks: int = 2
    ssr_views: int = 4
    ssr_keep: float = 0.5  # share of input dimensions each view keeps
    ssr_view_dim: int = 64
    ssr_hidden: int = 400  # width after fusing the views
    ics_iters: int = 2
    filter_seed: int = 0  # fixes SSR-S's random subsets (part of the architecture, not of training)
    name: str = field(default="")  # display name, e.g. "SSR-S"

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.ssr_filter not in SSR_FILTERS:
            raise ValueError(f"ssr_filter must be one of {SSR_FILTERS}, got {self.ssr_filter!r}")
        if not 0.0 < self.ssr_keep <= 1.0:
            raise ValueError("ssr_keep must be in (0, 1]")
        if self.n_categorical < 1 or self.n_features < self.n_categorical or self.embed_dim < 1:
            raise ValueError("need at least one categorical field, one id per field and embed_dim >= 1")
        if self.model in ("deepfm", "dcnv2", "dnn") and not self.hidden:
            raise ValueError(f"{self.model} needs at least one hidden layer")
        if self.ics_iters < 0 or self.ssr_blocks < 1 or self.ssr_views < 1:
            raise ValueError("need ics_iters >= 0, ssr_blocks >= 1 and ssr_views >= 1")

    @property
    def n_fields(self) -> int:
        return self.n_categorical + self.n_numeric

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.model == "ssr":
            return "SSR-S" if self.ssr_filter == "static" else "SSR-D"
        return {"lr": "LR", "fm": "FM", "deepfm": "DeepFM", "dcnv2": "DCNv2", "dnn": "DNN"}[self.model]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CTRConfig:
        return cls(**{**d, "hidden": tuple(d.get("hidden", ()))})

    def with_(self, **changes: Any) -> CTRConfig:
        return replace(self, **changes)


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """Compress heavy-tailed counts (Criteo I5 reaches 1e6) while keeping the sign of negative values."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


class FieldEmbedding(nn.Module):
    """``[B, n_fields, D]``: one vector per categorical id, value-scaled vectors for numeric fields."""

    def __init__(self, cfg: CTRConfig) -> None:
        super().__init__()
        self.table = nn.Embedding(cfg.n_features, cfg.embed_dim)
        # Small init (FuxiCTR uses std 1e-4): rare ids start near zero instead of as noise.
        nn.init.normal_(self.table.weight, std=1e-4)
        self.numeric = nn.Parameter(torch.randn(cfg.n_numeric, cfg.embed_dim) * 1e-2) if cfg.n_numeric else None

    def forward(self, feature_ids: torch.Tensor, numeric: torch.Tensor | None) -> torch.Tensor:
        e = self.table(feature_ids)
        if self.numeric is None:
            return e
        if numeric is None:
            raise ValueError("this model has numeric fields; pass the numeric input")
        return torch.cat([e, signed_log1p(numeric).unsqueeze(-1) * self.numeric], dim=1)


class FirstOrder(nn.Module):
    """The LR part: bias + one weight per id + one weight per (transformed) numeric field."""

    def __init__(self, cfg: CTRConfig) -> None:
        super().__init__()
        self.weight = nn.Embedding(cfg.n_features, 1)
        nn.init.zeros_(self.weight.weight)
        self.numeric = nn.Linear(cfg.n_numeric, 1, bias=False) if cfg.n_numeric else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, feature_ids: torch.Tensor, numeric: torch.Tensor | None) -> torch.Tensor:
        out = self.weight(feature_ids).sum(dim=(1, 2)) + self.bias
        if self.numeric is not None and numeric is not None:
            out = out + self.numeric(signed_log1p(numeric)).squeeze(-1)
        return out


def fm_interaction(e: torch.Tensor) -> torch.Tensor:
    """Sum of pairwise dot products of the field vectors, in O(F * D): 0.5 * ((sum e)^2 - sum e^2)."""
    return 0.5 * (e.sum(dim=1).pow(2) - e.pow(2).sum(dim=1)).sum(dim=-1)


def mlp(in_dim: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = h
    return nn.Sequential(*layers)


class CrossNetV2(nn.Module):
    """DCNv2's full-rank cross layers: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``."""

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class SSRBlock(nn.Module):
    """Filter (V views, k of d dimensions each, static or ICS), per-view dense layer, dense fusion."""

    def __init__(self, in_dim: int, cfg: CTRConfig, seed: int) -> None:
        super().__init__()
        v, m = cfg.ssr_views, cfg.ssr_view_dim
        self.views, self.view_dim, self.in_dim = v, m, in_dim
        self.keep = max(1, min(in_dim, round(cfg.ssr_keep * in_dim)))
        self.static = cfg.ssr_filter == "static"
        self.ics_iters = cfg.ics_iters
        if self.static:
            g = torch.Generator().manual_seed(seed)
            subsets = [torch.randperm(in_dim, generator=g)[: self.keep].sort().values for _ in range(v)]
            self.register_buffer("subset", torch.stack(subsets).reshape(-1), persistent=True)  # [V * k]
            fan_in = self.keep
        else:
            self.gain = nn.Parameter(torch.ones(v, in_dim))
            # sigmoid(0) = 0.5: each round removes half of the view's mean response from every dimension.
            self.inhibition = nn.Parameter(torch.zeros(v, 1))
            fan_in = in_dim
        bound = fan_in**-0.5  # nn.Linear's default init range for each view's own layer
        self.view_weight = nn.Parameter(torch.empty(v, fan_in, m).uniform_(-bound, bound))
        self.view_bias = nn.Parameter(torch.empty(v, 1, m).uniform_(-bound, bound))
        self.fuse = nn.Linear(v * m, cfg.ssr_hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def competition(self, x: torch.Tensor) -> torch.Tensor:
        """ICS: ``[B, d]`` -> ``[V, B, d]`` with at most ``k`` non-zero responses per (view, example)."""
        u = self.gain.unsqueeze(1) * x.unsqueeze(0)  # [V, B, d]
        strength = torch.sigmoid(self.inhibition).unsqueeze(1)  # [V, 1, 1]
        for _ in range(self.ics_iters):
            mag = u.abs()
            # Lateral inhibition: each dimension is suppressed by the view's mean response; the
            # strongest always survive (max >= mean), weak ones drop to exactly zero.
            u = torch.sign(u) * F.relu(mag - strength * mag.mean(dim=-1, keepdim=True))
        if self.keep < self.in_dim:
            mag = u.abs()
            kth = torch.topk(mag, self.keep, dim=-1).values[..., -1:]
            u = u * (mag >= kth).to(u.dtype)  # hard budget; gradients flow through the kept values
        return u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.static:
            filtered = torch.index_select(x, 1, self.subset).reshape(b, self.views, self.keep).transpose(0, 1)
        else:
            filtered = self.competition(x)
        h = F.relu(torch.matmul(filtered, self.view_weight) + self.view_bias)  # [V, B, m]
        h = h.transpose(0, 1).reshape(b, self.views * self.view_dim)
        return self.drop(F.relu(self.fuse(h)))


class CTRModel(nn.Module):
    """One of :data:`MODELS`; ``forward(feature_ids, numeric=None) -> logits [B]``."""

    def __init__(self, cfg: CTRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.n_fields * cfg.embed_dim
        kind = cfg.model
        self.embedding = FieldEmbedding(cfg) if kind != "lr" else None
        self.first_order = FirstOrder(cfg) if kind in ("lr", "fm", "deepfm") else None
        self.deep = mlp(d, cfg.hidden, cfg.dropout) if kind in ("deepfm", "dcnv2", "dnn") else None
        self.cross = CrossNetV2(d, cfg.n_cross) if kind == "dcnv2" else None
        if kind == "ssr":
            dims = [d] + [cfg.ssr_hidden] * (cfg.ssr_blocks - 1)
            self.blocks = nn.ModuleList(SSRBlock(dim, cfg, cfg.filter_seed + i) for i, dim in enumerate(dims))
            head_in = cfg.ssr_hidden
        else:
            self.blocks = nn.ModuleList()
            head_in = (cfg.hidden[-1] if self.deep is not None else 0) + (d if self.cross is not None else 0)
        self.head = nn.Linear(head_in, 1) if head_in else None

    def forward(self, feature_ids: torch.Tensor, numeric: torch.Tensor | None = None) -> torch.Tensor:
        logit = torch.zeros(feature_ids.shape[0], dtype=torch.float32, device=feature_ids.device)
        if self.first_order is not None:
            logit = logit + self.first_order(feature_ids, numeric)
        if self.embedding is None:
            return logit
        e = self.embedding(feature_ids, numeric)  # [B, F, D]
        if self.cfg.model in ("fm", "deepfm"):
            logit = logit + fm_interaction(e)
        x = e.flatten(1)
        if self.cfg.model == "ssr":
            for block in self.blocks:
                x = block(x)
            return logit + self.head(x).squeeze(-1)
        parts = []
        if self.cross is not None:
            parts.append(self.cross(x))
        if self.deep is not None:
            parts.append(self.deep(x))
        if parts and self.head is not None:
            logit = logit + self.head(torch.cat(parts, dim=-1)).squeeze(-1)
        return logit


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``total``, ``embedding`` (the id tables, which grow with the vocabulary) and ``dense`` (the rest)."""
    total = sum(p.numel() for p in model.parameters())
    emb = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            emb += module.weight.numel()
    return {"total": total, "embedding": emb, "dense": total - emb}


class CalibratedCTR(nn.Module):
    """Serving graph: ``probability = sigmoid(scale * logit + bias)`` (Platt; identity = (1, 0))."""

    def __init__(self, model: CTRModel, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("bias", torch.tensor(float(bias)))

    def forward(self, feature_ids: torch.Tensor, numeric: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.scale * self.model(feature_ids, numeric) + self.bias)


def save_checkpoint(model: CTRModel, path: Any, extra: dict[str, Any] | None = None) -> None:
    torch.save({"config": model.cfg.to_dict(), "state": model.state_dict(), **(extra or {})}, path)


def load_checkpoint(path: Any) -> tuple[CTRModel, dict[str, Any]]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = CTRModel(CTRConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state"])
    return model.eval(), blob
