"""Semantic novelty detection with a trained relational model (docs/METHOD.md §6): prototypes, scores, metrics.

Conventions, used everywhere in this module:
- Known test images are the *positive* class of every metric except ``aupr_out``.
- ``normality`` is higher for images that look like a known class (max softmax over the class scores; with
  ``prototypes=knn`` the reference kNN evaluator's mean of the top-k similarities to all support samples).
- ``fpr95`` takes known = positive, as ReSeND/ODIN report it: the fraction of UNKNOWN images accepted when the
  threshold accepts 95 % of the KNOWN images, with our exact threshold rule (`fpr_at_95_known`: the
  ceil(0.95 n_known)-th largest known score, accept >= it). The ReSeND/ICIAP code instead takes the ROC point whose
  known recall is nearest 0.95 (`fpr95_reference`, not recorded): the two differ by up to ~1/n_known in known
  recall. OpenOOD / pytorch-ood report the other role assignment (OOD = positive, FPR of ID at 95 % TPR of OOD);
  we never mix the two.

Everything is batched (the reference scores one test image at a time): the backbone features of all support
and test images are computed once, then every (test image, prototype) pair goes through the relational module
in batches of ``settings.eval_batch_size`` pairs. Within one `evaluate_benchmarks` call a `FeatureMemo` computes
the features of an image shared by several benchmarks (same glyph font:char, same emoji vendor:hex) only once.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from lib import bank, runs
from lib.config import Settings
from lib.device import autocast, resolve_device

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "accuracy")
IMAGE_BATCH = 256  # images per backbone batch (eval_batch_size counts pairs; larger image batches gain nothing)

# Settings the evaluation notebooks take from the *notebook* (everything else comes from the trained run).
EVAL_FIELDS = ("study", "run_dir", "seed", "device", "num_workers", "interactive", "data_root", "benchmarks",
               "eval_batch_size", "prototypes", "prototypes_k", "r2_pairs")


# ----------------------------------------------------------------------------- metrics
def fpr_at_95_known(normality: np.ndarray, is_known: np.ndarray) -> float:
    """FPR95 with known = positive: fraction of unknown images accepted when at least 95 % of the known images are.

    Exact rule (ties included): sort the known scores in decreasing order and let ``k = ceil(0.95 * n_known)``;
    the threshold ``t`` is the k-th largest known score; an image is *accepted* when its score is ``>= t``
    (so with ties at ``t`` more than 95 % of the known images may be accepted, never fewer);
    ``fpr95 = mean(unknown_scores >= t)``. This is our rule, not the reference code's: that one takes the ROC
    point whose known recall is nearest 0.95 (`fpr95_reference`), which may accept fewer than 95 % of the known
    images (one fewer known image when ceil(0.95 n) / n is farther from 0.95 than the point below it).
    """
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    return float(np.mean(normality[~is_known] >= known_threshold(normality, is_known)))


def fpr95_reference(normality: np.ndarray, is_known: np.ndarray) -> float:
    """FPR95 as the ReSeND/ICIAP reference code computes it (``fpr_and_fdr_at_recall``; for comparison, not in
    METRICS): over the ROC points (threshold t = each distinct score down to the lowest known score, accept >= t)
    take the one whose known recall is nearest 0.95, the lowest threshold among equally near ones, and return the
    fraction of unknown images accepted there. Distances are float64 as in the reference, so an exact tie can
    resolve by rounding (n_known = 10: |0.9 - 0.95| < |1.0 - 0.95| in float, recall 0.9 wins)."""
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    known = np.sort(normality[is_known])
    thresholds = np.unique(normality[normality >= known[0]])  # increasing; the reference stops at full recall
    recall = (len(known) - np.searchsorted(known, thresholds, side="left")) / len(known)
    t = thresholds[np.argmin(np.abs(recall - 0.95))]  # argmin = first = lowest threshold among ties
    return float(np.mean(normality[~is_known] >= t))


def known_threshold(normality: np.ndarray, is_known: np.ndarray, fraction_pct: int = 95) -> float:
    """The k-th largest known score, k = ceil(fraction_pct / 100 * n_known): accepting scores >= it accepts at
    least `fraction_pct` % of the known images (the FPR95 threshold)."""
    known = np.sort(np.asarray(normality, dtype=np.float64)[np.asarray(is_known, dtype=bool)])[::-1]
    k = max(1, (fraction_pct * len(known) + 99) // 100)  # integer ceil: no float rounding surprises
    return float(known[k - 1])


def novelty_metrics(normality, is_known, predictions=None, labels=None) -> dict[str, float]:
    """Metrics of one benchmark, plain floats in [0, 1].

    - ``auroc``: ROC AUC with known = positive, score = normality (ties count 1/2, sklearn).
    - ``fpr95``: see `fpr_at_95_known` (lower is better).
    - ``aupr_in``: average precision with known = positive, score = normality.
    - ``aupr_out``: average precision with unknown = positive, score = -normality.
    - ``accuracy``: closed-set accuracy of ``predictions`` on the known images (NaN when not given).
    """
    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    if normality.shape != is_known.shape or normality.ndim != 1:
        raise ValueError(f"normality {normality.shape} and is_known {is_known.shape} must be 1-d of equal length")
    if not is_known.any():
        raise ValueError("no known test images: AUROC/FPR95 are undefined; check the benchmark's num_known and labels")
    if is_known.all():
        raise ValueError("no unknown test images: AUROC/FPR95 are undefined; the benchmark's test set must hold "
                         "classes >= num_known")
    if np.isnan(normality).any():
        raise ValueError("normality contains NaN: the model produced non-finite similarities")
    out = {
        "auroc": float(roc_auc_score(is_known, normality)),
        "fpr95": fpr_at_95_known(normality, is_known),
        "aupr_in": float(average_precision_score(is_known, normality)),
        "aupr_out": float(average_precision_score(~is_known, -normality)),
        "accuracy": float("nan"),
    }
    if predictions is not None:
        if labels is None:
            raise ValueError("accuracy needs the test labels together with the predictions")
        predictions, labels = np.asarray(predictions), np.asarray(labels)
        out["accuracy"] = float(np.mean(predictions[is_known] == labels[is_known]))
    return out


AUROC_SE_RESAMPLES = 200  # bootstrap resamples of auroc_se
AUROC_SE_SEED = 0  # fixed: the SE of a run never depends on the run seed


def auroc_bootstrap_se(normality, is_known, resamples: int = AUROC_SE_RESAMPLES, seed: int = AUROC_SE_SEED) -> float:
    """Bootstrap standard error of the AUROC over test images (plain float, AUROC units).

    Stratified: each resample draws n_known known and n_unknown unknown images with replacement, so every
    resample keeps the benchmark's known/unknown counts; SE = std (ddof=1) of the resampled AUROCs (Mann-Whitney
    with average ranks, ties count 1/2 as in `novelty_metrics`). Images are resampled independently: images of
    one class are correlated, so this is the test-image part of the uncertainty, not a between-class one.
    """
    from scipy.stats import rankdata

    normality = np.asarray(normality, dtype=np.float64)
    is_known = np.asarray(is_known, dtype=bool)
    known, unknown = normality[is_known], normality[~is_known]
    n1, n0 = len(known), len(unknown)
    if n1 == 0 or n0 == 0:
        raise ValueError("auroc_se needs known and unknown test images")
    rng = np.random.default_rng(seed)
    draws = np.concatenate([known[rng.integers(0, n1, (resamples, n1))],
                            unknown[rng.integers(0, n0, (resamples, n0))]], axis=1)
    ranks = rankdata(draws, axis=1)[:, :n1].sum(1)
    aurocs = (ranks - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(np.std(aurocs, ddof=1))


# ----------------------------------------------------------------------------- features
def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def extract_features(model, imageset, image_size: int, batch_size: int = 256, device=None) -> torch.Tensor:
    """Backbone features (N, 512) float32 of every image of `imageset`, on the model's device, eval transform.

    The eval transform (``data.eval_transform``, a torchvision v2 pipeline) is applied to the whole uint8 batch
    at once (v2 transforms accept leading batch dimensions), on the device; the result equals the per-image
    application (tests/test_evaluate.py checks it).
    """
    from lib import data

    device = torch.device(device) if device is not None else model_device(model)
    transform = data.eval_transform(image_size)
    model.eval()
    chunks = []
    for start in range(0, len(imageset), batch_size):
        idx = np.arange(start, min(start + batch_size, len(imageset)))
        images = transform(imageset.batch_uint8(idx).to(device, non_blocking=True))
        images = images.contiguous(memory_format=torch.channels_last)  # faster convolutions on CUDA and CPU
        with autocast(device):
            chunks.append(model.features(images).float())
    if not chunks:
        raise ValueError("cannot extract features of an empty image set")
    return torch.cat(chunks)


_DEFAULT_ID = re.compile(r"img\d+")  # the placeholder ids a TensorImageSet gets when none are given


def content_ids(imageset) -> np.ndarray | None:
    """The set's ``ids`` when they can name image content (same id => same pixels), else None: missing, of the
    wrong length, repeated within the set, or the ``img<i>`` placeholders of a TensorImageSet built without ids
    (those restart at 0 in every set). The embedded loaders give font:char, vendor:hex, split:row ids and real
    sets their relative paths, all rendered/decoded at one image_size per call."""
    ids = getattr(imageset, "ids", None)
    if ids is None or len(ids) != len(imageset):
        return None
    ids = np.asarray(ids).astype(str)
    if len(np.unique(ids)) != len(ids) or all(_DEFAULT_ID.fullmatch(i) for i in ids):
        return None
    return ids


class FeatureMemo:
    """Backbone features by image id, for one model at one image_size (e.g. the benchmarks of one
    `evaluate_benchmarks` call): an image already seen is not sent through the backbone again.

    A set without usable ids (see `content_ids`) is computed in full and not remembered. Counters: ``computed``
    images sent through the backbone, ``hits`` images served from the memo, ``hit_seconds`` the backbone seconds
    those hits had cost when computed (each image is charged its batch's wall-clock / batch size). An image's
    feature does not depend on the other images of its batch (eval mode; bit-identical on CPU, which
    tests/test_evaluate.py checks through the metrics).
    """

    def __init__(self, path: Path | str | None = None):
        self.rows: dict[str, torch.Tensor] = {}
        self.cost: dict[str, float] = {}  # id -> seconds its computation took
        self.model_ref: int | None = None
        self.image_size: int | None = None
        self.hits = 0
        self.computed = 0
        self.hit_seconds = 0.0
        self.path = Path(path) if path is not None else None
        if self.path is not None and self.path.exists():
            self.rows, self.cost = self._read(self.path)
        self._stored = set(self.rows)

    @classmethod
    def for_frozen_backbone(cls, backbone: torch.nn.Module, image_size: int) -> "FeatureMemo":
        """A memo kept on disk, ``.cache/features/eval_<backbone digest>_<size>px.pt``, for a backbone that no run
        changes (the frozen-backbone regime, the reference rows): every run of a study and the reference rows
        then share the support/test features, computed once. Call `save` after use."""
        from lib.paths import CACHE_DIR

        digest = bank.backbone_digest(backbone)[:16]
        return cls(CACHE_DIR / "features" / f"eval_{digest}_{image_size}px.pt")

    @classmethod
    def for_run(cls, model, settings) -> "FeatureMemo":
        """The memo for scoring a run's images: on disk (`for_frozen_backbone`) when its backbone is the unchanged
        pretrained one (``train_backbone: false``), else in memory, for this evaluation only."""
        if getattr(settings, "train_backbone", True):
            return cls()
        return cls.for_frozen_backbone(model.backbone, settings.image_size)

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return dict(zip(state["ids"], state["feats"])), dict(zip(state["ids"], state["cost"].tolist()))

    def save(self) -> None:
        """Merge the rows computed since loading into the memo's file (under a lock: parallel runs add theirs)."""
        if self.path is None or set(self.rows) <= self._stored:
            return
        with runs.exclusive(self.path):
            rows, cost = self._read(self.path) if self.path.exists() else ({}, {})
            rows.update((k, v.cpu()) for k, v in self.rows.items())
            cost.update(self.cost)
            ids = sorted(rows)
            buffer = io.BytesIO()
            torch.save({"ids": ids, "feats": torch.stack([rows[i] for i in ids]).float(),
                        "cost": torch.tensor([cost[i] for i in ids], dtype=torch.float64)}, buffer)
            runs.atomic_write_bytes(self.path, buffer.getvalue())
        self._stored = set(rows)

    def features(self, model, imageset, image_size: int, batch_size: int, device) -> torch.Tensor:
        """As `extract_features`, computing only the images whose id is not in the memo yet."""
        if self.model_ref is None:
            self.model_ref, self.image_size = id(model), image_size
        elif (self.model_ref, self.image_size) != (id(model), image_size):
            raise ValueError("a FeatureMemo serves one model at one image_size: make a new one per evaluation")
        ids = content_ids(imageset)
        if ids is None:  # also an empty set: extract_features raises its error
            self.computed += len(imageset)
            return extract_features(model, imageset, image_size, batch_size, device)
        missing = [i for i, key in enumerate(ids) if key not in self.rows]
        hit_keys = [key for key in ids.tolist() if key in self.rows]
        if missing:
            start = time.perf_counter()
            new = extract_features(model, imageset.subset(missing), image_size, batch_size, device)
            per_image = (time.perf_counter() - start) / len(missing)
            self.rows.update(zip(ids[missing].tolist(), new))
            self.cost.update((key, per_image) for key in ids[missing].tolist())
        self.hits += len(hit_keys)
        self.hit_seconds += sum(self.cost[key] for key in hit_keys)
        self.computed += len(missing)
        return torch.stack([self.rows[key] for key in ids.tolist()]).to(device)


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
                 return_repr: bool = False) -> torch.Tensor:
    """Head outputs (P, out_dim) float32 of the pairs of feature rows ``pos`` (P, 2), related in chunks of
    `batch_pairs`; with `return_repr` the relational representations (P, H) instead (see ``ReSeND.relate``)."""
    device = feats.device
    out = []
    for start in range(0, len(pos), batch_pairs):
        p = pos[start : start + batch_pairs]
        with autocast(device, cpu=cpu_amp):
            fa, fb = feats[p[:, 0]], feats[p[:, 1]]
            result = model.relate(fa, fb, return_repr=True)[1] if return_repr else model.relate(fa, fb)
        out.append(result.float())
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
    support = features(model, benchmark.support, settings.image_size, image_batch, device)
    protos, owners = build_prototypes(support, benchmark.support.labels, benchmark.num_known, settings.prototypes,
                                      settings.prototypes_k)
    test = features(model, benchmark.test, settings.image_size, image_batch, device)
    sims = pair_similarities(model, objective, test, protos, settings.eval_batch_size, settings.cpu_amp)
    scores = class_scores(sims, owners, benchmark.num_known, settings.prototypes, settings.prototypes_k)
    probs = torch.softmax(scores.double(), dim=1)
    normality, predictions = probs.max(1)
    if settings.prototypes == "knn":
        normality = knn_normality(sims, settings.prototypes_k)
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
    )


# ----------------------------------------------------------------------------- many benchmarks
def check_checkpoint(run_dir: Path | str) -> Path:
    """Return ``run_dir/checkpoints/last.pt`` or raise FileNotFoundError saying how to make it."""
    path = Path(run_dir) / "checkpoints" / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trained model in {run_dir}: {path} is missing. Train it first, e.g. "
                                f"`papermill notebooks/02_train.ipynb out.ipynb -p run_dir {run_dir}`")
    return path


def merge_settings(trained: Settings, requested: Settings, run_dir: Path | str | None = None) -> Settings:
    """Settings for evaluating a trained run: the trained run's values for everything that defines the model and
    its data (architecture, objective, image_size, dataset, ...), the notebook's values for the evaluation fields
    (`EVAL_FIELDS`: benchmarks, prototypes, eval_batch_size, r2_pairs, device, data_root, ...).
    An empty notebook ``data_root`` keeps the trained one."""
    values = trained.to_dict()
    for name in EVAL_FIELDS:
        value = getattr(requested, name)
        if name == "data_root" and not value:
            continue
        values[name] = value
    values["run_dir"] = str(run_dir if run_dir is not None else requested.resolved_run_dir())
    return dataclasses.replace(trained, **values)


def find_run_dir(settings: Settings) -> Path:
    """``settings.resolved_run_dir()``; a relative path that does not exist from the working directory is taken
    from the repository root."""
    from lib.paths import REPO_ROOT

    run_dir = settings.resolved_run_dir()
    if not run_dir.is_absolute() and not run_dir.exists() and (REPO_ROOT / run_dir).exists():
        run_dir = REPO_ROOT / run_dir
    return run_dir


def load_for_eval(run_dir: Path | str, settings: Settings):
    """(model, objective, merged settings) of a trained run, on ``settings.device``; clear error without checkpoint."""
    check_checkpoint(run_dir)
    from lib import train

    device = resolve_device(settings)
    model, objective, trained = train.load_trained(run_dir, device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return model, objective, merge_settings(trained, settings, run_dir)


def average_metrics(per_benchmark: dict[str, dict[str, float]], kinds: dict[str, str]) -> dict[str, float]:
    """Flat keys ``<metric>__<benchmark>`` plus ``<metric>__<kind>_avg`` (intra / cross) and ``<metric>__avg``."""
    flat: dict[str, float] = {}
    for name, metrics in per_benchmark.items():
        for key, value in metrics.items():
            flat[f"{key}__{name}"] = value
    groups = {"avg": list(per_benchmark)}
    for kind in sorted(set(kinds.values())):
        groups[f"{kind}_avg"] = [n for n in per_benchmark if kinds[n] == kind]
    for group, names in groups.items():
        for key in METRICS:
            flat[f"{key}__{group}"] = float(np.mean([per_benchmark[n][key] for n in names]))
    return flat


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
    """
    if isinstance(source, (str, Path)):
        model, objective, settings = load_for_eval(source, settings)
    else:
        model, objective = source
    from lib import data

    names = list(names) if names is not None else data.available_benchmarks(settings.benchmarks, settings)
    if not names:
        raise ValueError(f"no benchmarks selected by {settings.benchmarks!r}")
    per_benchmark, kinds, scores = {}, {}, {}
    features = memo if isinstance(memo, FeatureMemo) else FeatureMemo.for_run(model, settings) if memo else None
    skipped = {}
    for name in names:
        benchmark = data.load_benchmark(name, settings)
        skipped[name] = len(getattr(benchmark.support, "skipped", [])) + len(getattr(benchmark.test, "skipped", []))
        scores[name] = score_benchmark(model, objective, benchmark, settings, features)
        per_benchmark[name] = scores[name].metrics()
        per_benchmark[name]["eval_seconds"] = scores[name].seconds
        per_benchmark[name]["auroc_se"] = auroc_bootstrap_se(scores[name].normality, scores[name].is_known)
        kinds[name] = benchmark.kind
    flat = average_metrics({n: {k: m[k] for k in METRICS} for n, m in per_benchmark.items()}, kinds)
    flat.update({f"eval_seconds__{n}": m["eval_seconds"] for n, m in per_benchmark.items()})
    flat.update({f"auroc_se__{n}": m["auroc_se"] for n, m in per_benchmark.items()})
    if features is not None:
        features.save()
    if settings.run_dir and any(skipped.values()):  # missing/undecodable files (each warned about when loaded)
        runs.update_env(Path(settings.run_dir), {"skipped_images": {n: k for n, k in skipped.items() if k}})
    return flat, scores


def paper_table(metrics: dict[str, float], names: list[str]):
    """The paper's layout: rows = benchmarks (+ average rows), columns AUROC / FPR95 (DataFrame)."""
    import pandas as pd

    rows = {n: {"AUROC": metrics[f"auroc__{n}"], "FPR95": metrics[f"fpr95__{n}"]} for n in names}
    for group in ("intra_avg", "cross_avg", "avg"):
        if f"auroc__{group}" in metrics:
            rows[group] = {"AUROC": metrics[f"auroc__{group}"], "FPR95": metrics[f"fpr95__{group}"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "benchmark"
    return table
