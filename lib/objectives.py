"""Pair objectives of the ICIAP-2023 table (docs/METHOD.md §4): a registry name -> spec, Kornblith style.

Conventions (x = head output, t = pair label, ``lib.SAME = 1`` / ``lib.DIFFERENT = 0``, s = 2t - 1):

* 1-logit objectives (mse, bce, bce_focal, hinge): the head outputs (N, 1); ``similarity`` is x itself,
  and x > 0 predicts "same".
* 2-logit objectives (ce, ce_focal): the head outputs (N, 2), column ``SAME`` (= 1) is the "same" logit;
  ``similarity`` is that "same" logit (docs/METHOD.md §4), and argmax predicts.

``loss_curve(p)`` is the loss of one example as a function of p = the probability the model assigns to
the correct class. The mapping used: for 1-logit objectives p = sigma(s * x), i.e. the logit of a *same* pair
is x = log(p / (1 - p)) (and its negation for a different pair); every 1-logit loss here is symmetric in s,
so one curve covers both labels. Consequently mse's curve is 4 * (1 - sigma(c * logit(p)))^2 (c changes its
shape; c = 1 gives 4 (1 - p)^2), bce_focal's is -(1 - sigma(k * logit(p)))^gamma * log(p) (its focal weight reads
the compressed sigma(k x) while the BCE term reads x; k = 1 gives -(1 - p)^gamma log p) and hinge's is
max(0, delta - logit(p)). For the 2-logit objectives p is the softmax probability of the correct class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from lib import SAME


def _signs(target: Tensor, like: Tensor) -> Tensor:
    """+1 for a same pair, -1 for a different pair, in the dtype of `like`."""
    return target.to(like.dtype) * 2 - 1


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


# --- per-example losses: (output (N, out_dim), target (N,)) -> (N,) -----------------------------------------
def _mse(output: Tensor, target: Tensor, c: float) -> Tensor:
    y = 2 * torch.sigmoid(c * output[:, 0]) - 1
    return (y - _signs(target, y)) ** 2


def _bce(output: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(output[:, 0], target.to(output.dtype), reduction="none")


def _bce_focal(output: Tensor, target: Tensor, gamma: float, k: float) -> Tensor:
    sx = _signs(target, output) * output[:, 0]
    log_p_t = F.logsigmoid(sx)  # the BCE term stays on x: p_t = sigma(x) for same, sigma(-x) for different
    log_one_minus_focal_p_t = F.logsigmoid(-k * sx)  # focal weight from p = sigma(k x) (reference), stable log
    return -torch.exp(gamma * log_one_minus_focal_p_t) * log_p_t


def _ce(output: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(output, target.long(), reduction="none")


def _ce_focal(output: Tensor, target: Tensor, gamma: float) -> Tensor:
    log_probs = F.log_softmax(output, dim=1)
    t = target.long()
    log_p_t = log_probs.gather(1, t[:, None])[:, 0]
    log_p_other = log_probs.gather(1, (1 - t)[:, None])[:, 0]  # two classes: 1 - p_t = p_other, stable
    return -torch.exp(gamma * log_p_other) * log_p_t


def _hinge(output: Tensor, target: Tensor, delta: float) -> Tensor:
    return torch.clamp(delta - _signs(target, output) * output[:, 0], min=0)


# --- loss as a function of the probability of the correct class (see module docstring) ---------------------
def _curve_mse(p: Tensor, c: float) -> Tensor:
    return 4 * (1 - torch.sigmoid(c * _logit(p))) ** 2


def _curve_log(p: Tensor) -> Tensor:
    return -torch.log(p)


def _curve_focal(p: Tensor, gamma: float) -> Tensor:
    return -((1 - p) ** gamma) * torch.log(p)


def _curve_bce_focal(p: Tensor, gamma: float, k: float) -> Tensor:
    return -torch.exp(gamma * F.logsigmoid(-k * _logit(p))) * torch.log(p)


def _curve_hinge(p: Tensor, delta: float) -> Tensor:
    return torch.clamp(delta - _logit(p), min=0)


def _logit_similarity(output: Tensor) -> Tensor:
    return output[:, 0]


def _same_logit_similarity(output: Tensor) -> Tensor:
    return output[:, SAME]


def _logit_predicts_same(output: Tensor) -> Tensor:
    return output[:, 0] > 0


def _argmax_predicts_same(output: Tensor) -> Tensor:
    return output.argmax(dim=1) == SAME


@dataclass(frozen=True)
class ObjectiveSpec:
    """One registry entry: per-example loss, its default parameters and how to read the head output."""

    loss_fn: Callable[..., Tensor]  # (output, target, **params) -> per-example loss (N,)
    defaults: dict[str, float]
    out_dim: int
    similarity: Callable[[Tensor], Tensor]  # (N, out_dim) -> (N,), higher = more similar
    predicts_same: Callable[[Tensor], Tensor]  # (N, out_dim) -> bool (N,)
    loss_curve: Callable[..., Tensor]  # (p, **params) -> loss, p = probability of the correct class
    description: str = ""


REGISTRY: dict[str, ObjectiveSpec] = {
    "mse": ObjectiveSpec(_mse, {"c": 1.0}, 1, _logit_similarity, _logit_predicts_same, _curve_mse,
                         "(2 sigma(c x) - 1 - (+1 same | -1 different))^2"),
    "bce": ObjectiveSpec(_bce, {}, 1, _logit_similarity, _logit_predicts_same, _curve_log,
                         "binary cross-entropy with logits"),
    "bce_focal": ObjectiveSpec(_bce_focal, {"gamma": 3.0, "k": 10.0}, 1, _logit_similarity, _logit_predicts_same,
                               _curve_bce_focal, "BCE(x) * (1 - p_t)^gamma, p = sigma(k x) (reference k = 10)"),
    "ce": ObjectiveSpec(_ce, {}, 2, _same_logit_similarity, _argmax_predicts_same, _curve_log,
                        "2-logit softmax cross-entropy"),
    "ce_focal": ObjectiveSpec(_ce_focal, {"gamma": 3.0}, 2, _same_logit_similarity, _argmax_predicts_same, _curve_focal,
                              "CE * (1 - p_t)^gamma"),
    "hinge": ObjectiveSpec(_hinge, {"delta": 1.0}, 1, _logit_similarity, _logit_predicts_same, _curve_hinge,
                           "max(0, delta - s x), s = +1 same / -1 different"),
}


@dataclass
class Objective:
    """A registry entry bound to its parameters. ``loss`` returns the batch mean (a scalar)."""

    name: str
    params: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> ObjectiveSpec:
        return REGISTRY[self.name]

    @property
    def out_dim(self) -> int:
        return self.spec.out_dim

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the batch; output (N, out_dim), target (N,) with 1 = same, 0 = different."""
        return self.spec.loss_fn(output, target, **self.params).mean()

    def per_example_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.spec.loss_fn(output, target, **self.params)

    def similarity(self, output: Tensor) -> Tensor:
        """(N,) score, higher = more similar: x for 1-logit objectives, the "same" logit for CE."""
        return self.spec.similarity(output)

    def predicts_same(self, output: Tensor) -> Tensor:
        """(N,) bool: the model's same/different decision (x > 0, or argmax for CE)."""
        return self.spec.predicts_same(output)

    def loss_curve(self, p: Tensor) -> Tensor:
        """Loss of one example as a function of p in (0, 1), the probability of the correct class."""
        return self.spec.loss_curve(p, **self.params)

    def label(self) -> str:
        """Short display name, e.g. ``mse c=10`` or ``bce``."""
        return " ".join([self.name] + [f"{k}={v:g}" for k, v in self.params.items()])


def make(name: str, **params: float) -> Objective:
    """The objective `name` with its default parameters overridden by `params` (unknown parameter = error)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown objective {name!r}: choose one of {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise KeyError(f"objective {name!r} takes parameters {sorted(spec.defaults)}, got unknown {unknown}")
    values = {k: float(v) for k, v in {**spec.defaults, **params}.items()}
    for key, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"objective {name!r}: parameter {key}={value} must be finite")
    return Objective(name, values)


# ----------------------------------------------------------------------------- loss shapes (05_loss_shapes)
def curve_grid(points: int = 199, low: float = 0.005, high: float = 0.995) -> Tensor:
    """The p grid of the loss-shape view: `points` evenly spaced float64 values in [low, high] (p = 0 and 1 excluded:
    the logit maps them to infinity)."""
    return torch.linspace(low, high, points, dtype=torch.float64)


def loss_curves(objectives: dict[str, Objective], p: Tensor | None = None) -> pd.DataFrame:
    """Long table (columns config, p, loss, grad), one row per objective and grid point: ``loss`` =
    ``loss_curve(p)`` and ``grad`` = dL/dp by autograd (signed: negative where the loss falls as p rises).
    `p` defaults to `curve_grid`."""
    p_grid = curve_grid() if p is None else p.detach().to(torch.float64)
    rows = []
    for name, objective in objectives.items():
        at = p_grid.clone().requires_grad_(True)
        loss = objective.loss_curve(at)
        (grad,) = torch.autograd.grad(loss.sum(), at)
        rows.append(pd.DataFrame({"config": name, "p": p_grid.numpy(), "loss": loss.detach().numpy(),
                                  "grad": grad.numpy()}))
    return pd.concat(rows, ignore_index=True)


def rising_curves(curves: pd.DataFrame, tolerance: float = 1e-12) -> list[str]:
    """Configs of a `loss_curves` table whose loss rises anywhere by more than `tolerance` between neighbouring grid
    points (a loss must fall, or stay flat, as the correct class becomes more probable); sorted."""
    falls = curves.groupby("config")["loss"].apply(lambda s: bool((s.diff().dropna() <= tolerance).all()))
    return falls[~falls].index.tolist()


def curve_table(curves: pd.DataFrame, low: float = 0.5, high: float = 0.9) -> pd.DataFrame:
    """Per config of a `loss_curves` table (index, sorted): the loss at p = `low` and p = `high` (linear
    interpolation on the grid) and ``grad_ratio_<high>_over_<low>`` = |dL/dp(high) / dL/dp(low)|, the push left on
    a pair already `high` right relative to one at `low` (0: saturated; columns named as 05 records them)."""
    by_config = curves.groupby("config")
    at = lambda column, p: by_config.apply(lambda g: np.interp(p, g.p, g[column]))  # noqa: E731
    return pd.DataFrame({f"loss_at_p{low:g}": at("loss", low), f"loss_at_p{high:g}": at("loss", high),
                         f"grad_ratio_{high:g}_over_{low:g}": (at("grad", high) / at("grad", low)).abs()})
