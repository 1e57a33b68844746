"""Reference rows of every study table: what ReSeND's AUROC is read against (no training, seconds per benchmark).

- ``backbone_proto``: the study's frozen backbone (``pretrained`` of its preset, loaded as `lib.model.build`
  loads it), cosine similarity of each test feature to the class-mean prototypes of the support features, and
  ReSeND's rule on top (docs/METHOD.md §6): normality = max_c softmax(s / T)_c, prediction = argmax_c. ReSeND applies the
  softmax to unbounded logits; a cosine lies in [-1, 1], so at T = 1 the softmax over C classes is nearly flat
  (max prob <= e^2 / (e^2 + C - 1), 0.24 for C = 25) and MSP ranks images by s_max - mean(s) rather than by how
  well they match a class. T = `TEMPERATURE` = 0.1 (scale 10) is the usual cosine-classifier temperature
  (SupCon / CIDER / ReweightOOD's tau = 0.1, docs/METHOD.md §10), which turns cosines into logit-like margins.
  Also recorded (not in the tables): ``backbone_proto_t1`` (T = 1) and ``backbone_proto_maxcos``
  (normality = max_c cosine, no softmax).
- ``pixels_1nn``: raw pixels, normality = max cosine of the flattened eval-transform image (resized, ImageNet
  normalisation) to any support image; prediction = label of that nearest support image.

`write_reference_rows` writes ``outputs/<study>/reference/metrics.json`` with flat keys
``<row>__<metric>__<benchmark>`` (metrics of `lib.metrics.novelty_metrics` plus ``auroc_se``) and
``n_known__<benchmark>`` / ``n_unknown__<benchmark>``, with params.yaml, env.json and recipe.json; it does
nothing when the folder already holds the rows of the same recipe (backbone, benchmarks, character plan, rule).

    python -m lib.reference outputs/mini --set preset=mini
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from lib import cli, config, data, evaluate, pretrain, runs
from lib.baselines import posthoc
from lib import model as model_lib
from lib.backbone import find_pretrained
from lib.config import Settings
from lib.datasets import glyphs
from lib.device import configure_cpu, resolve_device
from lib.features import IMAGE_BATCH, FeatureMemo, extract_features
from lib.metrics import AUROC_SE_RESAMPLES, AUROC_SE_SEED, auroc_bootstrap_se, novelty_metrics

REFERENCE_DIR = "reference"  # outputs/<study>/reference/
TEMPERATURE = 0.1  # softmax temperature of the cosines of backbone_proto (see the module docstring)
VERSION = 2  # bump when a row's rule changes (2: the kNN and Mahalanobis rows): a stored reference of another version is recomputed
# Rows shown in every study table (label = how a table names it), then the ones only recorded.
TABLE_ROWS = {"backbone_proto": f"ref: frozen backbone, cosine to class means, MSP T={TEMPERATURE}",
              "backbone_knn1": "ref: frozen backbone, kNN k=1 (normalised features)",
              "backbone_mahalanobis": "ref: frozen backbone, Mahalanobis (class means, tied covariance)",
              "pixels_1nn": "ref: raw pixels, 1-NN max cosine"}
ROWS = (*TABLE_ROWS, "backbone_proto_t1", "backbone_proto_maxcos")


def recipe(settings: Settings, names: list[str]) -> dict:
    """Everything the reference numbers depend on (compared with the stored recipe.json to skip the work)."""
    if settings.pretrained == "source":
        backbone = pretrain.weight_path(settings).name
    else:
        path = find_pretrained(settings.pretrained)
        backbone = str(path) if path else "random init"
    glyph = any(data.BENCHMARKS[n]["group"] == "glyph" for n in names)
    return {"version": VERSION, "temperature": TEMPERATURE, "backbone": backbone, "small_stem": settings.small_stem,
            "image_size": settings.image_size, "benchmarks": list(names), "data_root": settings.data_root,
            "glyph_plan": glyphs.plan_fingerprint() if glyph else "",
            "se_resamples": AUROC_SE_RESAMPLES, "se_seed": AUROC_SE_SEED}


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) cosine similarity of the rows of `a` and `b`, float32, in [-1, 1]."""
    a, b = torch.nn.functional.normalize(a.float(), dim=1), torch.nn.functional.normalize(b.float(), dim=1)
    return a @ b.T


def msp(sims: torch.Tensor, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(normality = max_c softmax(sims / T)_c, prediction = argmax_c) as numpy float64 / int64."""
    probs = torch.softmax(sims.double() / temperature, dim=1)
    normality, predictions = probs.max(1)
    return normality.cpu().numpy(), predictions.cpu().numpy().astype(np.int64)


@torch.inference_mode()
def pixel_features(imageset, image_size: int, batch_size: int = 512) -> torch.Tensor:
    """(N, 3 * S * S) float32: each image's eval-transform pixels (resized, ImageNet normalisation), flattened."""
    transform = data.eval_transform(image_size)
    chunks = [transform(imageset.batch_uint8(np.arange(i, min(i + batch_size, len(imageset))))).flatten(1)
              for i in range(0, len(imageset), batch_size)]
    return torch.cat(chunks)


def _metrics(normality, predictions, is_known, labels) -> dict[str, float]:
    out = novelty_metrics(normality, is_known, predictions, labels)
    out["auroc_se"] = auroc_bootstrap_se(normality, is_known)
    return out


def benchmark_rows(backbone, benchmark, settings: Settings, memo: FeatureMemo | None = None,
                   device=None) -> dict[str, dict[str, float]]:
    """{row: metrics} of one benchmark for every row of `ROWS`; `backbone` is a model with ``features``."""
    labels = np.asarray(benchmark.test.labels, dtype=np.int64)
    is_known = np.asarray(benchmark.is_known(labels), dtype=bool)
    features = memo.features if memo is not None else extract_features
    batch = min(settings.eval_batch_size, IMAGE_BATCH)
    support = features(backbone, benchmark.support, settings.image_size, batch, device, settings.num_workers)
    protos, _ = evaluate.build_prototypes(support, benchmark.support.labels, benchmark.num_known, "mean")
    test = features(backbone, benchmark.test, settings.image_size, batch, device, settings.num_workers)
    sims = cosine(test, protos)
    rows = {"backbone_proto": _metrics(*msp(sims, TEMPERATURE), is_known, labels),
            "backbone_proto_t1": _metrics(*msp(sims, 1.0), is_known, labels)}
    best = sims.max(1)
    rows["backbone_proto_maxcos"] = _metrics(best.values.double().cpu().numpy(),
                                             best.indices.cpu().numpy().astype(np.int64), is_known, labels)
    # what the support-trained comparison methods start from: the same features, no training (lib.baselines.posthoc)
    for name, (normality, predictions) in posthoc.backbone_scores(support.float().cpu(), benchmark.support.labels,
                                                                  test.float().cpu()).items():
        rows[f"backbone_{name}"] = _metrics(normality, predictions, is_known, labels)
    pixels = cosine(pixel_features(benchmark.test, settings.image_size),
                    pixel_features(benchmark.support, settings.image_size))
    nearest = pixels.max(1)
    support_labels = np.asarray(benchmark.support.labels, dtype=np.int64)
    rows["pixels_1nn"] = _metrics(nearest.values.double().numpy(), support_labels[nearest.indices.numpy()],
                                  is_known, labels)
    return rows


def load_backbone(settings: Settings):
    """(model whose ``features`` is the study's frozen backbone, info) on settings.device, as `lib.model.build`
    builds it (its relational part is unused here); a random-init backbone is seeded with 0."""
    weights = pretrain.backbone_weights(settings)
    torch.manual_seed(0)
    net, info = model_lib.build(settings, 1, weights)
    return net.to(resolve_device(settings)).eval(), info


def compute_reference_rows(settings: Settings, names: list[str]) -> tuple[dict[str, float], dict]:
    """(flat metrics ``<row>__<metric>__<benchmark>`` + ``n_known__/n_unknown__<benchmark>``, backbone info)."""
    backbone, info = load_backbone(settings)
    memo = FeatureMemo.for_frozen_backbone(backbone.backbone, settings.image_size)  # shared with frozen runs
    flat: dict[str, float] = {}
    for name in names:
        benchmark = data.load_benchmark(name, settings)
        known = benchmark.is_known()
        flat[f"n_known__{name}"], flat[f"n_unknown__{name}"] = float(known.sum()), float((~known).sum())
        for row, metrics in benchmark_rows(backbone, benchmark, settings, memo).items():
            flat.update({f"{row}__{key}__{name}": value for key, value in metrics.items()})
    memo.save()
    return flat, info


def backbone_folder(pretrain_seed: int) -> str:
    """The reference folder of one backbone of a study run on several (a grid's ``pretrain_seeds``)."""
    return f"{REFERENCE_DIR}__bb{pretrain_seed}"


def write_reference_rows(study_dir: Path | str, settings: Settings, folder: str = REFERENCE_DIR) -> Path:
    """Compute the reference rows of a study (its preset's backbone, its benchmarks) into
    ``<study_dir>/<folder>/metrics.json`` and return that path; skipped when it holds the same recipe. A study on
    several backbones writes one folder per backbone (`backbone_folder`)."""
    out = Path(study_dir) / folder
    names = data.available_benchmarks(settings.benchmarks, settings)
    wanted = recipe(settings, names)
    stored = out / "recipe.json"
    if (out / "metrics.json").exists() and stored.exists() and json.loads(stored.read_text()) == wanted:
        return out / "metrics.json"
    configure_cpu(settings)
    flat, info = compute_reference_rows(settings, names)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # a stale recipe's keys must not survive the merge
    runs.atomic_write_text(out / "params.yaml", yaml.safe_dump(settings.to_dict(), sort_keys=False))
    runs.update_env(out, {"pretrained": info["pretrained"], "reference_recipe": wanted})
    runs.write_metrics(out, flat)
    runs.atomic_write_text(stored, json.dumps(wanted, indent=2, sort_keys=True))
    return out / "metrics.json"


def read_reference_rows(study_dir: Path | str) -> dict[str, dict[str, float]]:
    """{row: {``<metric>__<benchmark>``: value}} from ``<study_dir>/reference/metrics.json``; for a study on several
    backbones, the mean over its ``reference__bb<b>`` folders of every value they all hold ({} when none)."""
    metrics = runs.read_metrics(Path(study_dir) / REFERENCE_DIR)
    if not metrics:
        per_backbone = [runs.read_metrics(f) for f in sorted(Path(study_dir).glob(f"{REFERENCE_DIR}__bb*"))]
        per_backbone = [m for m in per_backbone if m]
        shared = set.intersection(*(set(m) for m in per_backbone)) if per_backbone else set()
        metrics = {k: float(np.mean([m[k] for m in per_backbone])) for k in shared}
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        row, _, rest = key.partition("__")
        if row in ROWS and rest:
            rows.setdefault(row, {})[rest] = value
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reference rows (frozen backbone, raw pixels) of a study.")
    parser.add_argument("study_dir")
    parser.add_argument("--config", help="YAML of settings; may hold `preset:` plus overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    args = parser.parse_args(argv)
    settings = config.settings_from_cli((["--config", args.config] if args.config else []) +
                                        [x for item in args.set for x in ("--set", item)])
    print(write_reference_rows(Path(args.study_dir), settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, prog="lib.reference"))
