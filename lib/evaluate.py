"""Semantic novelty detection with a trained relational model (docs/METHOD.md §6): prototypes and scores (metrics:
`lib.metrics`; backbone features: `lib.features`; loading a trained run: `lib.checkpoints`).

Conventions are those of `lib.metrics` (known = positive; our FPR95 rule and how it differs from the reference's).
``normality`` is the max softmax over the class scores; with ``prototypes=knn`` the reference kNN evaluator's mean
of the top-k similarities to all support samples.

Everything is batched (the reference scores one test image at a time): the backbone features of all support
and test images are computed once, then every (test image, prototype) pair goes through the relational module
in batches of ``settings.eval_batch_size`` pairs. Within one `evaluate_benchmarks` call a `FeatureMemo` computes
the features of an image shared by several benchmarks (same glyph font:char, same emoji vendor:hex) only once.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lib import data, runs
from lib.checkpoints import find_run_dir, load_for_eval  # noqa: F401 (find_run_dir: 03/04 call evaluate.find_run_dir)
from lib.config import Settings
from lib.device import autocast
from lib.features import IMAGE_BATCH, FeatureMemo, extract_features, model_device
from lib.metrics import METRICS, auroc_bootstrap_se, average_metrics, novelty_metrics
from lib.progress import bar as progress_bar
from lib.progress import each


# ----------------------------------------------------------------------------- prototypes
def kcenter_indices(feats: torch.Tensor, k: int) -> list[int]:
    """Greedy k-center on rows of `feats` (Euclidean): start at the row nearest the mean, then repeatedly add the
    row farthest from the chosen centres. Deterministic; returns min(k, N) distinct row indices."""
    k = min(k, len(feats))
    first = int(torch.cdist(feats.mean(0, keepdim=True), feats)[0].argmin())
    chosen = [first]
    dist = torch.cdist(feats[first : first + 1], feats)[0]
    while len(chosen) < k:
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, torch.cdist(feats[nxt : nxt + 1], feats)[0])
    return chosen


def build_prototypes(support_feats: torch.Tensor, support_labels: np.ndarray, num_known: int, kind: str = "mean",
                     k: int = 3) -> tuple[torch.Tensor, np.ndarray]:
    """Prototypes (M, 512) and their class (M,) for ``kind``:

    - ``mean``: one per class, its mean support feature (docs/METHOD.md §6);
    - ``kcenter``: the K = min(k, n_c) "most significant" support features of each class by greedy k-center;
    - ``knn`` / ``knn_class``: every support feature (the class score is then the mean of the class's top-k
      similarities; see `score_benchmark` for how the two compute normality).
    """
    labels = np.asarray(support_labels)
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"the support set holds {len(present)} class(es): novelty scores need >= 2 known classes "
                         "(softmax over one class is constant 1)")
    missing = sorted(set(range(num_known)) - set(present.tolist()))
    if missing:
        raise ValueError(f"known classes {missing} have no support images")
    protos, owners = [], []
    for c in range(num_known):
        rows = np.flatnonzero(labels == c)
        cls = support_feats[torch.as_tensor(rows, device=support_feats.device)]
        if kind == "mean":
            chosen = cls.mean(0, keepdim=True)
        elif kind == "kcenter":
            chosen = cls[kcenter_indices(cls, k)]
        elif kind in ("knn", "knn_class"):
            chosen = cls
        else:
            raise ValueError(f"unknown prototypes kind {kind!r}: mean | kcenter | knn | knn_class")
        protos.append(chosen)
        owners.append(np.full(len(chosen), c, dtype=np.int64))
    return torch.cat(protos), np.concatenate(owners)


@torch.inference_mode()
def pair_similarities(model, objective, test_feats: torch.Tensor, protos: torch.Tensor,
                      batch_pairs: int = 1024, cpu_amp: bool = False) -> torch.Tensor:
    """Similarity (N, M) float32 of every (test feature, prototype) pair; higher = more similar.

    Pairs are formed test-major and sent through ``model.relate`` in chunks of about `batch_pairs` pairs.
    """
    n, m = len(test_feats), len(protos)
    device = test_feats.device
    rows_per_chunk = max(1, batch_pairs // m)
    out = torch.empty(n, m, dtype=torch.float32, device=device)
    for start in range(0, n, rows_per_chunk):
        fa = test_feats[start : start + rows_per_chunk]
        r = len(fa)
        with autocast(device, cpu=cpu_amp):
            head = model.relate(fa.repeat_interleave(m, dim=0), protos.repeat(r, 1))
        out[start : start + r] = objective.similarity(head.float()).float().view(r, m)
    return out


@torch.inference_mode()
def relate_pairs(model, feats: torch.Tensor, pos: torch.Tensor, batch_pairs: int, cpu_amp: bool = False,
                 return_repr: bool = False, desc: str | None = None) -> torch.Tensor:
    """Head outputs (P, out_dim) float32 of the pairs of feature rows ``pos`` (P, 2), related in chunks of
    `batch_pairs`; with `return_repr` the relational representations (P, H) instead (see ``ReSeND.relate``);
    with `desc`, a progress bar over the chunks."""
    device = feats.device
    out = []
    starts = range(0, len(pos), batch_pairs)
    bar = progress_bar(total=len(starts), desc=desc, unit="batch", disable=desc is None)
    for start in each(starts, bar):
        p = pos[start : start + batch_pairs]
        with autocast(device, cpu=cpu_amp):
            fa, fb = feats[p[:, 0]], feats[p[:, 1]]
            result = model.relate(fa, fb, return_repr=True)[1] if return_repr else model.relate(fa, fb)
        out.append(result.float())
    bar.close()
    return torch.cat(out)


def class_scores(sims: torch.Tensor, owners: np.ndarray, num_known: int, kind: str = "mean", k: int = 3) -> torch.Tensor:
    """Reduce prototype similarities (N, M) to class scores (N, C): identity for ``mean``, max over the class's
    prototypes for ``kcenter``, mean of the class's top-min(k, n_c) similarities for ``knn`` and ``knn_class``."""
    if kind == "mean":
        return sims
    cols = []
    for c in range(num_known):
        s = sims[:, torch.as_tensor(np.flatnonzero(owners == c), device=sims.device)]
        cols.append(s.max(1).values if kind == "kcenter" else s.topk(min(k, s.shape[1]), dim=1).values.mean(1))
    return torch.stack(cols, 1)


def knn_normality(sims: torch.Tensor, k: int = 3) -> torch.Tensor:
    """(N,) float64 mean of each row's top-min(k, M) similarities to all M support samples, whatever their class:
    the reference kNN evaluator's normality (no per-class softmax; higher = more likely known)."""
    return sims.double().topk(min(k, sims.shape[1]), dim=1).values.mean(1)


# ----------------------------------------------------------------------------- one benchmark
def normality_scores(sims: torch.Tensor, owners: np.ndarray, num_known: int, kind: str = "mean",
                     k: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normality (N,) float64, predictions (N,) int64, class scores (N, C)) of prototype similarities (N, M):
    normality = max_c softmax(class scores)_c (docs/METHOD.md §6), or `knn_normality` for ``kind=knn``;
    prediction = argmax_c. Shared by `score_benchmark` and `lib.detector.ReSeNDDetector`."""
    scores = class_scores(sims, owners, num_known, kind, k)
    normality, predictions = torch.softmax(scores.double(), dim=1).max(1)
    if kind == "knn":
        normality = knn_normality(sims, k)
    return normality, predictions, scores


@dataclass
class BenchmarkScores:
    """Scores of one benchmark; arrays are numpy, rows follow the benchmark's test set order."""

    name: str
    normality: np.ndarray  # (N,) float64, higher = more likely known: in [1/C, 1] (max softmax) except for knn
    predictions: np.ndarray  # (N,) int64 argmax class
    similarities: np.ndarray  # (N, C) float32 class scores s_c (higher = more similar)
    is_known: np.ndarray  # (N,) bool
    test_labels: np.ndarray  # (N,) int64, >= num_known = unknown
    seconds: float  # wall-clock of features + pairs + softmax, memo hits charged at their computing cost
    memo_seconds: float = 0.0  # the part of `seconds` charged for features served by a FeatureMemo (not spent here)
    domains: np.ndarray | None = None  # (N,) str, the test images' domains (fonts' style, emoji vendor...) when known

    def metrics(self) -> dict[str, float]:
        return novelty_metrics(self.normality, self.is_known, self.predictions, self.test_labels)


def score_benchmark(model, objective, benchmark, settings: Settings,
                    memo: FeatureMemo | None = None) -> BenchmarkScores:
    """Score every test image of `benchmark` against the known-class prototypes of its support set (docs/METHOD.md §6).

    s_c = objective.similarity(model.relate(f(x), p_c)); normality = max_c softmax(s)_c; prediction = argmax_c.
    ``prototypes=knn`` (the reference kNN evaluator) keeps that prediction (argmax of the per-class top-k means)
    but takes normality = mean of the top-k similarities to all support samples (`knn_normality`), no softmax;
    ``knn_class`` is the per-class variant: softmax over the per-class top-k means, as for mean / kcenter.
    Without `memo` every support and test image goes through the backbone and ``seconds`` is the wall-clock
    (what benchmarks/eval_throughput.py measures). With one, images it already holds are not recomputed; their
    recorded computing cost is added, so ``seconds`` still estimates the benchmark's stand-alone cost (06 gives
    the finetuning baselines that budget) and ``seconds - memo_seconds`` is the work actually done here.
    """
    start = time.perf_counter()
    charged_before = memo.hit_seconds if memo is not None else 0.0
    device = model_device(model)
    model.eval()
    test_labels = np.asarray(benchmark.test.labels, dtype=np.int64)
    is_known = np.asarray(benchmark.is_known(test_labels), dtype=bool)
    if is_known.all() or not is_known.any():
        raise ValueError(f"benchmark {benchmark.name}: the test set has {is_known.sum()} known and {(~is_known).sum()} "
                         f"unknown images (num_known={benchmark.num_known}); novelty metrics need both")
    image_batch = min(settings.eval_batch_size, IMAGE_BATCH)
    features = memo.features if memo is not None else extract_features
    support = features(model, benchmark.support, settings.image_size, image_batch, device, settings.num_workers)
    protos, owners = build_prototypes(support, benchmark.support.labels, benchmark.num_known, settings.prototypes,
                                      settings.prototypes_k)
    test = features(model, benchmark.test, settings.image_size, image_batch, device, settings.num_workers)
    sims = pair_similarities(model, objective, test, protos, settings.eval_batch_size, settings.cpu_amp)
    normality, predictions, scores = normality_scores(sims, owners, benchmark.num_known, settings.prototypes,
                                                      settings.prototypes_k)
    if device.type == "cuda":
        torch.cuda.synchronize()
    charged = memo.hit_seconds - charged_before if memo is not None else 0.0
    return BenchmarkScores(
        name=benchmark.name,
        normality=normality.cpu().numpy(),
        predictions=predictions.cpu().numpy().astype(np.int64),
        similarities=scores.cpu().numpy(),
        is_known=is_known,
        test_labels=test_labels,
        seconds=time.perf_counter() - start + charged,
        memo_seconds=charged,
        domains=np.asarray(benchmark.test.domains).astype(str) if getattr(benchmark.test, "domains", None) is not None
        else None,
    )


# ----------------------------------------------------------------------------- per-image scores on disk
SCORE_ARRAYS = ("normality", "is_known", "test_labels", "predictions", "similarities")  # + domains when known


def scores_path(run_dir: Path | str, benchmark: str) -> Path:
    """``<run>/scores/<benchmark>.npz``: the per-image scores 03 saves, from which every ROC, histogram and
    per-class figure can be redrawn without the model."""
    return Path(run_dir) / "scores" / f"{benchmark}.npz"


def save_scores(run_dir: Path | str, scores: dict[str, BenchmarkScores]) -> list[Path]:
    """Write each benchmark's `BenchmarkScores` arrays (`SCORE_ARRAYS`, ``domains`` when known, ``seconds``) to
    `scores_path` (compressed npz, atomic); returns the paths."""
    written = []
    for name, s in scores.items():
        arrays = {key: getattr(s, key) for key in SCORE_ARRAYS}
        if s.domains is not None:
            arrays["domains"] = np.asarray(s.domains).astype(str)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays, seconds=np.float64(s.seconds))
        written.append(scores_path(run_dir, name))
        runs.atomic_write_bytes(written[-1], buffer.getvalue())
    return written


def load_scores(run_dir: Path | str, benchmark: str) -> BenchmarkScores:
    """The `BenchmarkScores` `save_scores` wrote for `benchmark`; FileNotFoundError when the run has none (a run
    evaluated before 03 saved scores: re-run 03 for it)."""
    path = scores_path(run_dir, benchmark)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: re-run 03_evaluate for {Path(run_dir).name}")
    with np.load(path, allow_pickle=False) as z:
        return BenchmarkScores(name=benchmark, normality=z["normality"], predictions=z["predictions"],
                               similarities=z["similarities"], is_known=z["is_known"].astype(bool),
                               test_labels=z["test_labels"], seconds=float(z["seconds"]) if "seconds" in z else math.nan,
                               domains=z["domains"] if "domains" in z else None)


# ----------------------------------------------------------------------------- many benchmarks
def evaluate_benchmarks(source: Any, settings: Settings, names: list[str] | None = None,
                        memo: bool | FeatureMemo = True):
    """Evaluate a run on benchmarks; return ``(flat metrics, {name: BenchmarkScores})``.

    `source` is a run folder (its checkpoint is loaded; its model/data settings win, see `merge_settings`) or a
    ``(model, objective)`` tuple (then `settings` are used as given). `names` default to ``settings.benchmarks``
    resolved by ``data.available_benchmarks`` (real benchmarks are skipped when data_root is empty).
    With `memo` (True: a new `FeatureMemo`, or pass one to read its counters) the benchmarks share backbone
    features: an image in several of them goes through the backbone once. ``eval_seconds__<name>`` keeps meaning
    the benchmark's stand-alone cost: features served by the memo are charged at the seconds they took (see
    `score_benchmark`). ``memo=False`` computes every benchmark in full. Metrics are the same either way.
    ``auroc_se__<name>`` is the bootstrap standard error of the benchmark's AUROC (`auroc_bootstrap_se`).
    With ``settings.run_dir`` the run's env.json records, per real benchmark, which split lists it read
    (``splits``: paper | own | derived, `lib.datasets.real.list_origin`).
    """
    if isinstance(source, (str, Path)):
        model, objective, settings = load_for_eval(source, settings)
    else:
        model, objective = source
    names = list(names) if names is not None else data.available_benchmarks(settings.benchmarks, settings)
    if not names:
        raise ValueError(f"no benchmarks selected by {settings.benchmarks!r}")
    per_benchmark, kinds, scores = {}, {}, {}
    features = memo if isinstance(memo, FeatureMemo) else FeatureMemo.for_run(model, settings) if memo else None
    skipped, splits = {}, {}
    bar = progress_bar(total=len(names), desc="evaluate", unit="benchmark")
    for name in each(names, bar, label=str):
        benchmark = data.load_benchmark(name, settings)
        if benchmark.split != "embedded":
            splits[name] = benchmark.split  # paper | own | derived: summary tables say which lists they rest on
        skipped[name] = len(getattr(benchmark.support, "skipped", [])) + len(getattr(benchmark.test, "skipped", []))
        scores[name] = score_benchmark(model, objective, benchmark, settings, features)
        per_benchmark[name] = scores[name].metrics()
        per_benchmark[name]["eval_seconds"] = scores[name].seconds
        per_benchmark[name]["auroc_se"] = auroc_bootstrap_se(scores[name].normality, scores[name].is_known)
        kinds[name] = benchmark.kind
    bar.close()
    flat = average_metrics({n: {k: m[k] for k in METRICS} for n, m in per_benchmark.items()}, kinds)
    flat.update({f"eval_seconds__{n}": m["eval_seconds"] for n, m in per_benchmark.items()})
    flat.update({f"auroc_se__{n}": m["auroc_se"] for n, m in per_benchmark.items()})
    if features is not None:
        features.save()
    if settings.run_dir and any(skipped.values()):  # missing/undecodable files (each warned about when loaded)
        runs.update_env(Path(settings.run_dir), {"skipped_images": {n: k for n, k in skipped.items() if k}})
    if settings.run_dir and splits:
        recorded = runs.read_env(Path(settings.run_dir)).get("splits", {})
        runs.update_env(Path(settings.run_dir), {"splits": {**recorded, **splits}})
    return flat, scores


def paper_table(metrics: dict[str, float], names: list[str]):
    """The paper's layout: rows = benchmarks (+ average rows), columns AUROC / FPR95 (DataFrame)."""
    rows = {n: {"AUROC": metrics[f"auroc__{n}"], "FPR95": metrics[f"fpr95__{n}"]} for n in names}
    for group in ("intra_avg", "cross_avg", "avg"):
        if f"auroc__{group}" in metrics:
            rows[group] = {"AUROC": metrics[f"auroc__{group}"], "FPR95": metrics[f"fpr95__{group}"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "benchmark"
    return table
