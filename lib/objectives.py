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
class StudyConfig:
    """One named configuration of the study (a row of the ICIAP table, a file ``params/objectives/<name>.yaml``, a
    run folder ``<name>__seed<k>``): its objective's parameters, the model settings it changes, the paper's R²."""

    params: dict[str, float]  # objective parameters (the spec's names: c, delta, gamma, k)
    model: dict[str, object] = field(default_factory=dict)  # other settings it changes, e.g. {"head": "fc"}
    paper_r2: float | None = None  # ICIAP 2023 R² (ImageNet-trained ReSeND, seed 000); None = not in the paper


@dataclass(frozen=True)
class ObjectiveSpec:
    """One registry entry: per-example loss, its default parameters, how to read the head output, the settings
    that carry its parameters and the study's configurations of it."""

    loss_fn: Callable[..., Tensor]  # (output, target, **params) -> per-example loss (N,)
    defaults: dict[str, float]
    out_dim: int
    similarity: Callable[[Tensor], Tensor]  # (N, out_dim) -> (N,), higher = more similar
    predicts_same: Callable[[Tensor], Tensor]  # (N, out_dim) -> bool (N,)
    loss_curve: Callable[..., Tensor]  # (p, **params) -> loss, p = probability of the correct class
    description: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # parameter -> the Settings field that holds it
    name_tag: tuple[str, str] | None = None  # (parameter, prefix): run folders are named <loss>_<prefix><value:g>
    configs: dict[str, StudyConfig] = field(default_factory=dict)  # the study's named configurations, table order


REGISTRY: dict[str, ObjectiveSpec] = {
    "mse": ObjectiveSpec(_mse, {"c": 1.0}, 1, _logit_similarity, _logit_predicts_same, _curve_mse,
                         "(2 sigma(c x) - 1 - (+1 same | -1 different))^2", settings={"c": "mse_c"}, name_tag=("c", "c"),
                         configs={"resend_eccv": StudyConfig({"c": 1.0}, {"head": "fc"}),  # ECCV 2022: mse c=1, fc head
                                  "mse_c1": StudyConfig({"c": 1.0}, paper_r2=.520),
                                  "mse_c10": StudyConfig({"c": 10.0}, paper_r2=.111),
                                  "mse_c50": StudyConfig({"c": 50.0}, paper_r2=.015)}),
    "bce": ObjectiveSpec(_bce, {}, 1, _logit_similarity, _logit_predicts_same, _curve_log,
                         "binary cross-entropy with logits", configs={"bce": StudyConfig({}, paper_r2=.592)}),
    "bce_focal": ObjectiveSpec(_bce_focal, {"gamma": 3.0, "k": 10.0}, 1, _logit_similarity, _logit_predicts_same,
                               _curve_bce_focal, "BCE(x) * (1 - p_t)^gamma, p = sigma(k x) (reference k = 10)",
                               settings={"gamma": "focal_gamma", "k": "focal_k"},
                               configs={"bce_focal": StudyConfig({"gamma": 3.0, "k": 10.0}, paper_r2=.441)}),
    "ce": ObjectiveSpec(_ce, {}, 2, _same_logit_similarity, _argmax_predicts_same, _curve_log,
                        "2-logit softmax cross-entropy", configs={"ce": StudyConfig({}, paper_r2=.592)}),
    "ce_focal": ObjectiveSpec(_ce_focal, {"gamma": 3.0}, 2, _same_logit_similarity, _argmax_predicts_same, _curve_focal,
                              "CE * (1 - p_t)^gamma", settings={"gamma": "focal_gamma"},
                              configs={"ce_focal": StudyConfig({"gamma": 3.0}, paper_r2=.362)}),
    "hinge": ObjectiveSpec(_hinge, {"delta": 1.0}, 1, _logit_similarity, _logit_predicts_same, _curve_hinge,
                           "max(0, delta - s x), s = +1 same / -1 different", settings={"delta": "hinge_delta"},
                           name_tag=("delta", "d"),
                           configs={"hinge_d1": StudyConfig({"delta": 1.0}, paper_r2=.487),
                                    "hinge_d0.1": StudyConfig({"delta": 0.1}, paper_r2=.251),
                                    "hinge_d0.01": StudyConfig({"delta": 0.01}, paper_r2=.101)}),
}

# The study's configurations in table order, name -> (objective, its configuration); derived from REGISTRY.
CONFIGS: dict[str, tuple[str, StudyConfig]] = {name: (loss, c) for loss, spec in REGISTRY.items()
                                               for name, c in spec.configs.items()}
# Settings fields that carry an objective parameter, in registry order (each once).
PARAM_SETTINGS: tuple[str, ...] = tuple(dict.fromkeys(f for spec in REGISTRY.values() for f in spec.settings.values()))


def params_from_settings(loss: str, settings) -> dict[str, float]:
    """The parameters objective `loss` takes, read from their Settings fields (`ObjectiveSpec.settings`)."""
    spec = REGISTRY.get(loss)
    return {param: getattr(settings, field_name) for param, field_name in spec.settings.items()} if spec else {}


def config_name(loss: str, settings) -> str:
    """Run-folder name of an objective and its defining parameter, e.g. ``mse_c10``, ``hinge_d0.01``, ``bce``."""
    spec = REGISTRY.get(loss)
    if spec is None or spec.name_tag is None:
        return loss
    param, prefix = spec.name_tag
    return f"{loss}_{prefix}{getattr(settings, spec.settings[param]):g}"


def config_settings(name: str) -> dict[str, object]:
    """The settings a study configuration sets (what ``params/objectives/<name>.yaml`` holds): ``loss``, the
    objective's parameters under their Settings names, and the model settings it changes."""
    loss, study_config = CONFIGS[name]
    spec = REGISTRY[loss]
    return {"loss": loss, **{spec.settings[p]: v for p, v in study_config.params.items()}, **study_config.model}


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
