"""Flat, typed settings for every notebook and script (nanoGPT style).

Resolution order, later wins:
    Settings defaults (= the `smoke` preset)  <  params/presets/<preset>.yaml  <  explicit overrides.

An override is a value that differs from the smoke default; a notebook parameter left at its default
therefore means "take the preset's value". An unknown key is an error, never a warning.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from lib.paths import OUTPUTS_DIR, PARAMS_DIR

PRESETS = ("smoke", "mini", "paper")


@dataclass
class Settings:
    # --- run bookkeeping ---
    preset: str = "smoke"  # smoke (seconds, tests) | mini (embedded default, minutes) | paper (SPEC numbers)
    study: str = "scratch"  # outputs/<study>/ groups the runs of one sweep
    config_name: str = ""  # run folder name before __seed<k>; empty = derived from objective + its parameter
    run_dir: str = ""  # explicit run folder; empty = outputs/<study>/<config_name>__seed<seed>
    seed: int = 0  # every RNG (python, numpy, torch, samplers) is seeded from this
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    num_workers: int = 0  # DataLoader workers; 0 = main process (best on 2 cores with in-memory data)
    interactive: bool = False  # True = show ipywidgets browsers in notebooks
    # --- data ---
    dataset: str = "glyph"  # relational training source: glyph | emoji | fashion | imagenet (needs data_root)
    data_root: str = ""  # folder of real datasets (ImageNet, DTD, DomainNet, PACS, OfficeHome); empty = embedded only
    image_size: int = 32  # square side in pixels (paper: 224)
    source_classes: int = 60  # classes of the source set used for training (glyph has ~3000; 0 = all)
    benchmark: str = "glyph_printed"  # one benchmark (01_data); see lib.data.BENCHMARKS
    benchmarks: str = "glyph_printed,glyph_printed_to_handwritten"  # 03/06: comma list | a group (glyph, emoji, fashion, embedded, real) | all
    # --- model ---
    pretrained: str = "auto"  # auto (ImageNet weights if a local file exists, else random) | none | source | path/to/weights.pth
    pretrain_classes: int = 0  # pretrained=source: source classes the backbone classifier learns (0 = all)
    pretrain_epochs: int = 5  # pretrained=source: epochs of that classifier (cached per recipe, see lib.pretrain)
    pretrain_lr: float = 0.1  # pretrained=source: its peak SGD lr (cosine schedule)
    small_stem: bool = True  # 3x3 stride-1 stem without max-pool for 32-64 px inputs (False for 224 px)
    d_model: int = 64  # token width of the relational transformer (paper: 768)
    n_heads: int = 4  # attention heads (paper: 12)
    n_blocks: int = 1  # pre-LN transformer blocks (paper: 4)
    mlp_ratio: int = 4  # transformer MLP width = mlp_ratio * d_model
    head: str = "mlp"  # mlp (ICIAP: d -> head_hidden -> ReLU -> out) | fc (ECCV: single Linear)
    head_hidden: int = 256  # hidden width of the mlp head; its pre-ReLU activation is the R^2 representation
    # --- objective (SPEC 4) ---
    objective: str = "bce"  # mse | bce | bce_focal | ce | ce_focal | hinge
    mse_c: float = 1.0  # mse: y = 2*sigmoid(c*x) - 1; paper grid c in {1, 10, 50}
    focal_gamma: float = 3.0  # bce_focal / ce_focal exponent
    hinge_delta: float = 1.0  # hinge margin; paper grid delta in {1, 0.1, 0.01}
    # --- pairs (SPEC 3) ---
    pairing: str = "in_batch"  # in_batch (one backbone pass per image) | per_pair (reference: 2 passes per pair)
    neg_to_pos_ratio: int = 20  # negatives per anchor (k)
    class_balance: bool = True  # draw extra anchors from small classes up to the largest class's count
    images_per_class: int = 4  # in_batch: images of each class in a batch (>= 2 so positives exist)
    # --- optimisation (SPEC 5) ---
    steps: int = 30  # optimiser steps (paper: 33000)
    batch_pairs: int = 336  # pairs per step (paper: 4096); in_batch uses batch_pairs // (1 + k) anchors
    lr: float = 0.008  # peak learning rate after warmup
    warmup_steps: int = 5  # linear warmup from 0 (paper: 500)
    weight_decay: float = 5.0e-4  # weight decay of weight matrices (sgd: L2 in the gradient; adamw: decoupled)
    momentum: float = 0.9  # SGD momentum
    optimizer: str = "sgd"  # sgd (momentum, SPEC 5) | adamw (betas .9/.999)
    schedule: str = "constant"  # constant (SPEC 5: warmup then constant) | cosine (warmup then cosine to 0 at `steps`)
    grad_clip: float = 0.0  # max global gradient norm before each optimiser step; 0 = off
    train_backbone: bool = True  # False = freeze the backbone, train r and c on a cached feature bank (lib.bank)
    bank_views: int = 4  # train_backbone=False: train-augmented views of each source image in the bank
    lars: bool = False  # wrap SGD in LARS (paper: True, for batch 4096)
    lars_trust: float = 1.0e-3  # LARS trust coefficient
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # channels_last memory format on CUDA (ignored on CPU)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    resume: bool = True  # continue from run_dir/checkpoints/last.pt when it exists
    log_every: int = 1  # steps between history rows
    # --- evaluation (SPEC 6, 8) ---
    eval_batch_size: int = 1024  # (test image, prototype) pairs per relational-module batch
    prototypes: str = "mean"  # mean (class mean feature) | kcenter (K most significant per class, max) | knn
    prototypes_k: int = 3  # K of kcenter / k of knn
    r2_pairs: int = 600  # pairs for the R^2 analysis (paper: ~12000)
    # --- comparisons (SPEC 10) ---
    methods: str = "all"  # comma list of msp,maxlogit,energy,odin,mahalanobis,knn,mixoe_mixup,mixoe_cutmix,ssod,reweightood | all
    budget_s: float = 0.0  # wall-clock per finetuning method; 0 = train for baseline_epochs (converged setting)
    baseline_epochs: int = 2  # epochs on the support set in the converged setting
    baseline_lr: float = 0.05  # SGD lr of the support-set classifiers
    baseline_batch: int = 64  # images per batch for the support-set classifiers
    resend_study: str = ""  # 06: study folder (under outputs/) whose ReSeND runs are compared; empty = baselines only

    # ------------------------------------------------------------------
    def objective_params(self) -> dict[str, float]:
        """The parameters the chosen objective takes (see lib.objectives.REGISTRY)."""
        return {
            "mse": {"c": self.mse_c},
            "bce_focal": {"gamma": self.focal_gamma},
            "ce_focal": {"gamma": self.focal_gamma},
            "hinge": {"delta": self.hinge_delta},
        }.get(self.objective, {})

    def default_config_name(self) -> str:
        """e.g. ``mse_c10``, ``hinge_d0.01``, ``bce``: objective plus its defining parameter."""
        tag = {"mse": f"_c{self.mse_c:g}", "hinge": f"_d{self.hinge_delta:g}"}.get(self.objective, "")
        return self.objective + tag

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        return OUTPUTS_DIR / self.study / f"{self.config_name or self.default_config_name()}__seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(Settings)}
DEFAULTS = Settings().to_dict()


def _convert(name: str, value: Any) -> Any:
    """Convert a YAML / papermill value to the field's type; YAML reads `1e-3` as a string, so accept it."""
    kind = FIELDS[name].type
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if isinstance(value, (list, tuple)):  # benchmarks / methods may be given as YAML lists
            return ",".join(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting {name!r} must be {kind}, got {value!r}: fix its value in the YAML or the -p flag") from None


def _check_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise KeyError(f"unknown setting(s) {unknown} in {where}: see lib/config.py Settings for the valid names")


def load_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parameter file {path} does not exist: check the name under {PARAMS_DIR}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a flat mapping of settings, got {type(data).__name__}")
    return data


def preset_values(preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = load_yaml(PARAMS_DIR / "presets" / f"{preset}.yaml")
    _check_keys(values, f"params/presets/{preset}.yaml")
    return values


def resolve(preset: str = "smoke", **overrides: Any) -> Settings:
    """Settings for `preset`, with every override that differs from its smoke default applied on top."""
    _check_keys(overrides, "the overrides")
    values = {k: _convert(k, v) for k, v in preset_values(preset).items()}
    for key, value in overrides.items():
        value = _convert(key, value)
        if value != DEFAULTS[key]:
            values[key] = value
    values["preset"] = preset
    settings = Settings(**values)
    validate(settings)
    return settings


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def from_notebook(namespace: dict[str, Any]) -> Settings:
    """Resolve the settings of a notebook from its global namespace (parameters + papermill-injected values).

    Call it first thing after the parameters cell, before other imports bind names: every public,
    non-module name present is a parameter, so a mistyped ``-p nmae 3`` is an error here.
    """
    params = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in _IPYTHON_NAMES and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }
    return resolve(params.pop("preset", "smoke"), **params)


CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "head": ("mlp", "fc"),
    "pairing": ("in_batch", "per_pair"),
    "prototypes": ("mean", "kcenter", "knn"),
    "objective": ("mse", "bce", "bce_focal", "ce", "ce_focal", "hinge"),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("constant", "cosine"),
}


def validate(s: Settings) -> None:
    for name, options in CHOICES.items():
        if getattr(s, name) not in options:
            raise ValueError(f"setting {name}={getattr(s, name)!r} is not one of {', '.join(options)}")
    if s.d_model % s.n_heads:
        raise ValueError(f"d_model={s.d_model} must be divisible by n_heads={s.n_heads}")
    if s.images_per_class < 2:
        raise ValueError(f"images_per_class={s.images_per_class} must be >= 2 so every anchor has a positive")
    if s.batch_pairs < 1 + s.neg_to_pos_ratio:
        raise ValueError(f"batch_pairs={s.batch_pairs} must hold at least one anchor's 1 + {s.neg_to_pos_ratio} pairs")
    if s.pretrained == "source" and s.pretrain_epochs < 1:
        raise ValueError(f"pretrained=source needs pretrain_epochs >= 1, got {s.pretrain_epochs}")
    if s.steps < 1:
        raise ValueError(f"steps={s.steps} must be >= 1")
    if s.grad_clip < 0:
        raise ValueError(f"grad_clip={s.grad_clip} must be >= 0 (0 = no clipping)")
    if s.lars and s.optimizer != "sgd":
        raise ValueError(f"lars wraps SGD: set optimizer=sgd or lars=false (got optimizer={s.optimizer!r})")
    if s.bank_views < 1:
        raise ValueError(f"bank_views={s.bank_views} must be >= 1")
