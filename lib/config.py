"""Flat, typed settings for every notebook and script (nanoGPT style).

Resolution order, later wins:
    Settings defaults (= the `smoke` preset)  <  params/presets/<preset>.yaml  <  explicit overrides.

Every explicit override applies, even one equal to a default: a papermill ``-p``, a ``--set`` of
``lib.train`` and a grid's ``overrides``. In a notebook, the values papermill injected are the explicit ones;
a parameter left as the notebook's parameters cell wrote it means "take the preset" (see `from_notebook`).
An unknown key is an error, never a warning. Two documented aliases, each resolved (and printed) here and
nowhere else: the setting ``objective`` is the old name of ``loss``, and ``loss: focal`` means the sigmoid
focal loss ``bce_focal`` (gamma = 3, the ICIAP table's focal BCE).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from lib import objectives
from lib.paths import OUTPUTS_DIR, PARAMS_DIR

PRESETS = ("smoke", "mini", "paper")


@dataclass
class Settings:
    # --- run bookkeeping ---
    preset: str = "smoke"  # smoke (seconds, tests) | mini (embedded default, minutes) | paper (the numbers of docs/METHOD.md)
    study: str = "scratch"  # outputs/<study>/ groups the runs of one sweep
    config_name: str = ""  # run folder name before __seed<k>; empty = derived from objective + its parameter
    run_dir: str = ""  # explicit run folder; empty = outputs/<study>/<config_name>__seed<seed>
    seed: int = 0  # every RNG (python, numpy, torch, samplers) is seeded from this
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    num_workers: int = 0  # DataLoader workers decoding file-backed (real) sets; 0 = main process; in-memory: unused
    interactive: bool = False  # True = show ipywidgets browsers in notebooks
    # --- data ---
    dataset: str = "glyph"  # relational training source: glyph | emoji | fashion | imagenet (needs data_root)
    data_root: str = ""  # folder of real datasets (ImageNet, DTD, DomainNet, PACS, OfficeHome); empty = embedded only
    image_size: int = 32  # square side in pixels (paper: 224)
    source_classes: int = 60  # classes of the source set used for training (glyph has ~3000; 0 = all)
    benchmark: str = "glyph_printed"  # one benchmark (01_data); see lib.data.BENCHMARKS
    benchmarks: str = "glyph_printed,glyph_printed_to_handwritten"  # 03/06: comma list | a group (glyph, emoji, fashion, embedded, real) | all
    # --- model ---
    pretrained: str = "auto"  # auto (ImageNet weights if a local file exists, else random) | imagenet (that file or an error) | none | source | path/to/weights.pth
    pretrain_classes: int = 0  # pretrained=source: source classes the backbone classifier learns (0 = all)
    pretrain_epochs: int = 5  # pretrained=source: epochs of that classifier (cached per recipe, see lib.pretrain)
    pretrain_lr: float = 0.1  # pretrained=source: its peak SGD lr (cosine schedule)
    pretrain_seed: int = 0  # pretrained=source: the seed of that classifier (init, batches, augmentation); a study's backbones
    small_stem: bool = True  # 3x3 stride-1 stem without max-pool for 32-64 px inputs (False for 224 px)
    d_model: int = 64  # token width of the relational transformer (paper: 768)
    n_heads: int = 4  # attention heads (paper: 12)
    n_blocks: int = 1  # pre-LN transformer blocks (paper: 4)
    mlp_ratio: int = 4  # transformer MLP width = mlp_ratio * d_model
    head: str = "mlp"  # mlp (ICIAP: d -> head_hidden -> ReLU -> out) | fc (ECCV: single Linear)
    head_hidden: int = 256  # hidden width of the mlp head; its pre-ReLU activation is the R^2 representation
    # --- objective (docs/METHOD.md §4) ---
    loss: str = "bce"  # the objective: mse | bce | bce_focal (alias: focal) | ce | ce_focal | hinge
    mse_c: float = 1.0  # mse: y = 2*sigmoid(c*x) - 1; paper grid c in {1, 10, 50}
    focal_gamma: float = 3.0  # bce_focal / ce_focal exponent
    focal_k: float = 10.0  # bce_focal: focal weight from p = sigma(k*x), BCE on x (reference --sigmoid_compression)
    hinge_delta: float = 1.0  # hinge margin; paper grid delta in {1, 0.1, 0.01}
    # --- pairs (docs/METHOD.md §3) ---
    pairing: str = "in_batch"  # in_batch (one backbone pass per image) | per_pair (reference: 2 passes per pair)
    neg_to_pos_ratio: int = 20  # negatives per anchor (k)
    class_balance: bool = True  # draw extra anchors from small classes up to the largest class's count
    images_per_class: int = 4  # in_batch: images of each class in a batch (>= 2 so positives exist)
    # --- optimisation (docs/METHOD.md §5) ---
    steps: int = 30  # optimiser steps (paper: 33000)
    batch_pairs: int = 336  # pairs per step (paper: 4096); in_batch uses batch_pairs // (1 + k) anchors
    lr: float = 0.008  # peak learning rate after warmup
    warmup_steps: int = 5  # linear warmup from 0 (paper: 500)
    weight_decay: float = 5.0e-4  # weight decay of weight matrices (sgd: L2 in the gradient; adamw: decoupled)
    momentum: float = 0.9  # SGD momentum
    optimizer: str = "sgd"  # sgd (momentum, docs/METHOD.md §5) | adamw (betas .9/.999)
    schedule: str = "constant"  # constant (docs/METHOD.md §5: warmup then constant) | cosine (warmup then cosine to 0 at `steps`)
    grad_clip: float = 0.0  # max global gradient norm before each optimiser step; 0 = off
    train_backbone: bool = True  # False = freeze the backbone, train r and c on a cached feature bank (lib.bank)
    bank_views: int = 4  # train_backbone=False: train-augmented views of each source image in the bank
    lars: bool = False  # wrap SGD in LARS (paper: True, for batch 4096)
    lars_trust: float = 1.0e-3  # LARS trust coefficient
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast of the relational module on CPU too (fast on avx512_bf16/AMX CPUs)
    channels_last: bool = True  # channels_last memory format for the backbone (CUDA and CPU: ~1.2x on oneDNN CPUs)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    resume: bool = True  # continue from run_dir/checkpoints/last.pt when it exists
    deterministic: bool = True  # torch deterministic algorithms: seeded CPU runs bit-identical at any thread count
    log_every: int = 1  # steps between history rows
    # --- evaluation (docs/METHOD.md §6, 8) ---
    eval_batch_size: int = 1024  # (test image, prototype) pairs per relational-module batch
    prototypes: str = "mean"  # mean | kcenter (K per class, max) | knn (reference: top-k mean over all support) | knn_class (per class, softmax)
    prototypes_k: int = 3  # K of kcenter / k of knn and knn_class
    r2_pairs: int = 600  # pairs for the R^2 analysis (paper: ~12000)
    # --- comparisons (docs/METHOD.md §10) ---
    methods: str = "all"  # comma list of msp,maxlogit,energy,odin,mahalanobis,knn,mixoe_mixup,mixoe_cutmix,ssod,reweightood | all
    budget_s: float = 0.0  # 06: seconds per trained method of the budget-matched setting (beside the converged one); 0 = resend_study's ReSeND eval seconds, none: no such setting
    baseline_epochs: int = 1  # epochs on the support set in the converged setting (smoke; mini: 10)
    baseline_lr: float = 0.05  # SGD lr of the support-set classifiers
    baseline_batch: int = 64  # images per batch for the support-set classifiers
    ssod_epochs: int = 1  # SSOD fine-tuning epochs from a CE classifier at its input size (mini, paper: 5)
    mixoe_epochs: int = 1  # MixOE fine-tuning epochs from the converged CE classifier; smoke scales down the official 10 (mini, paper: 10)
    comparison_seeds: int = 1  # 06: seeds per method (seed, seed+1, ...), reported as mean ± std over them
    resend_study: str = ""  # 06: study folder (under outputs/) whose ReSeND runs are compared; empty = baselines only

    # ------------------------------------------------------------------
    def objective_params(self) -> dict[str, float]:
        """The parameters the chosen objective (``loss``) takes, from their settings (lib.objectives.REGISTRY)."""
        return objectives.params_from_settings(self.loss, self)

    def default_config_name(self) -> str:
        """e.g. ``mse_c10``, ``hinge_d0.01``, ``bce``: objective plus its defining parameter (lib.objectives)."""
        return objectives.config_name(self.loss, self)

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


ALIASES = {"objective": "loss"}  # old or other name -> setting
VALUE_ALIASES = {  # setting -> {the user's word: (the value it means, what that is)}
    "loss": {"focal": ("bce_focal", "the sigmoid focal loss, BCE x (1 - p_t)^focal_gamma, focal_gamma 3 by default")},
}


def canonical(values: dict[str, Any], where: str = "the overrides", say=print) -> dict[str, Any]:
    """`values` with aliased names and values replaced by the canonical ones; each replacement is said in one
    line (``say``). Giving both a name and its alias is an error."""
    out = dict(values)
    for alias, name in ALIASES.items():
        if alias in out:
            if name in out and out[name] != out[alias]:
                raise KeyError(f"both {name!r} and its alias {alias!r} are set in {where}: keep only {name!r}")
            out[name] = out.pop(alias)
            say(f"setting {alias!r} is the alias of {name!r}: {name} = {out[name]!r}")
    for name, words in VALUE_ALIASES.items():
        if isinstance(out.get(name), str) and out[name] in words:
            value, meaning = words[out[name]]
            say(f"{name} {out[name]!r} resolves to {value!r} ({meaning})")
            out[name] = value
    return out


def _check_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(FIELDS) - set(ALIASES))
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


def resolve(preset: str = "smoke", *, say=print, **overrides: Any) -> Settings:
    """Settings for `preset` with every override applied on top (an override equal to a default applies too)."""
    _check_keys(overrides, "the overrides")
    values = {k: _convert(k, v) for k, v in canonical(preset_values(preset), f"params/presets/{preset}.yaml", say).items()}
    for key, value in canonical(overrides, say=say).items():
        values[key] = _convert(key, value)
    values["preset"] = preset
    settings = Settings(**values)
    validate(settings)
    return settings


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
PAPERMILL_HEADER = "# Parameters"  # first line of the cell papermill injects after the parameters cell


def injected_names(history: list[str]) -> set[str]:
    """Names assigned by the cells papermill injected (``-p``, ``-f``, ``-y``), read from IPython's input history."""
    names: set[str] = set()
    for source in history:
        if source.lstrip().startswith(PAPERMILL_HEADER):
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def from_notebook(namespace: dict[str, Any]) -> Settings:
    """Resolve the settings of a notebook from its global namespace (parameters + papermill-injected values).

    Call it first thing after the parameters cell, before other imports bind names: every public,
    non-module name present is a parameter, so a mistyped ``-p nmae 3`` is an error here. A value papermill
    injected always applies; one left as the parameters cell wrote it applies only when it differs from the
    smoke default (an edit made in JupyterLab), so an untouched parameter takes the preset's value.
    """
    params = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in _IPYTHON_NAMES and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }
    _check_keys(params, "the notebook's parameters")
    injected = injected_names(namespace.get("In") or [])
    explicit = {k: v for k, v in params.items()
                if k in injected or k == "preset" or _convert(ALIASES.get(k, k), v) != DEFAULTS[ALIASES.get(k, k)]}
    return resolve(explicit.pop("preset", "smoke"), **explicit)


CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "head": ("mlp", "fc"),
    "pairing": ("in_batch", "per_pair"),
    "prototypes": ("mean", "kcenter", "knn", "knn_class"),
    "loss": tuple(objectives.REGISTRY),  # mse | bce | bce_focal | ce | ce_focal | hinge
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
    for name, low, inclusive in LOWER_BOUNDS:
        value = getattr(s, name)
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise ValueError(f"setting {name}={value!r} must be {'>=' if inclusive else '>'} {low:g}: fix it in the "
                             "YAML or the -p flag")
    if not 0 <= s.momentum < 1:
        raise ValueError(f"setting momentum={s.momentum!r} must be in [0, 1)")
    if s.lars and s.optimizer != "sgd":
        raise ValueError(f"lars wraps SGD: set optimizer=sgd or lars=false (got optimizer={s.optimizer!r})")


# (setting, lower bound, bound allowed): values outside train a constant model or fail deep inside torch
LOWER_BOUNDS = (
    ("steps", 1, True), ("lr", 0.0, False), ("mse_c", 0.0, False), ("hinge_delta", 0.0, False),
    ("focal_gamma", 0.0, True), ("weight_decay", 0.0, True), ("warmup_steps", 0, True), ("lars_trust", 0.0, False),
    ("neg_to_pos_ratio", 1, True), ("image_size", 8, True), ("log_every", 1, True), ("checkpoint_every", 0, True),
    ("eval_batch_size", 1, True), ("prototypes_k", 1, True), ("r2_pairs", 2, True), ("source_classes", 0, True),
    ("num_workers", 0, True), ("budget_s", 0.0, True), ("baseline_epochs", 1, True), ("baseline_lr", 0.0, False),
    ("baseline_batch", 2, True), ("pretrain_lr", 0.0, False), ("grad_clip", 0.0, True), ("bank_views", 1, True),
    ("focal_k", 0.0, False), ("mixoe_epochs", 1, True), ("ssod_epochs", 1, True),
    ("comparison_seeds", 1, True),
)


def settings_from_cli(argv=None) -> Settings:
    """Settings from a command line: ``--config x.yaml`` (may hold ``preset:`` plus overrides) and ``--set key=value``
    overrides (`lib.train`, `lib.pretrain`, `lib.reference`)."""
    parser = argparse.ArgumentParser(description="Train ReSeND (single process or under torchrun).")
    parser.add_argument("--config", help="YAML of settings; may hold `preset:` plus overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    args = parser.parse_args(argv)
    values = load_yaml(args.config) if args.config else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} must look like key=value")
        values[key.strip()] = value.strip()
    return resolve(values.pop("preset", "smoke"), **values)
