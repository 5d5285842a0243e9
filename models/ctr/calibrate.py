"""Platt scaling on held-out validation logits: ``p = sigmoid(scale * logit + bias)``.

Fitted on the validation split (never on the training rows, whose logits are over-confident,
nor on test) by minimising log-loss with L-BFGS over two numbers; temperature scaling is the
special case ``bias = 0``. The result is folded into the exported graph
(:class:`models.ctr.model.CalibratedCTR`), so ONNX's ``probability`` is already calibrated.
AUC is unchanged for ``scale > 0`` (a monotone map); log-loss and ECE are what it can improve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from models.ctr.metrics import expected_calibration_error, log_loss


@dataclass
class Calibration:
    scale: float = 1.0
    bias: float = 0.0
    method: str = "identity"
    fitted_on: str = ""
    before: dict[str, float] | None = None  # on the fitting split, before/after
    after: dict[str, float] | None = None

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.scale * np.asarray(logits, dtype=np.float64) + self.bias)))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_platt(logits: np.ndarray, labels: np.ndarray, fitted_on: str = "valid", max_iter: int = 200) -> Calibration:
    """Platt scaling by L-BFGS on the mean BCE; falls back to identity if the fit would invert the ranking."""
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    scale, bias = (float(v) for v in params.detach())
    p0 = _sigmoid(np.asarray(logits, dtype=np.float64))
    before = {"LogLoss": log_loss(labels, p0), "ECE": expected_calibration_error(labels, p0)}
    if not (np.isfinite(scale) and np.isfinite(bias)) or scale <= 0:
        return Calibration(fitted_on=fitted_on, before=before, after=before)
    cal = Calibration(scale=scale, bias=bias, method="platt", fitted_on=fitted_on, before=before)
    p1 = cal.apply(logits)
    cal.after = {"LogLoss": log_loss(labels, p1), "ECE": expected_calibration_error(labels, p1)}
    return cal
