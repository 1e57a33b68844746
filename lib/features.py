"""Backbone features of image sets (eval transform, batched) and the memo that computes an image shared by several
benchmarks once: `extract_features`, `content_ids`, `FeatureMemo` (in memory, or on disk for a frozen backbone).
The training-time feature bank of the frozen-backbone regime is `lib.bank`.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import torch

from lib import bank, data, paths, runs
from lib.device import autocast, cpu_paths
from lib.progress import bar as progress_bar

IMAGE_BATCH = 256  # images per backbone batch (eval_batch_size counts pairs; larger image batches gain nothing)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def extract_features(model, imageset, image_size: int, batch_size: int = 256, device=None,
                     num_workers: int = 0, desc: str | None = None) -> torch.Tensor:
    """Backbone features (N, 512) float32 of every image of `imageset`, on the model's device, eval transform;
    with `desc`, a progress bar over the images (`lib.progress`).

    The eval transform (``data.eval_transform``, a torchvision v2 pipeline) is applied to the whole uint8 batch
    at once (v2 transforms accept leading batch dimensions), on the device; the result equals the per-image
    application (tests/test_evaluate.py checks it). A file-backed set is decoded in `num_workers` DataLoader workers.
    """
    device = torch.device(device) if device is not None else model_device(model)
    transform = data.eval_transform(image_size)
    model.eval()
    chunks = []
    with progress_bar(total=len(imageset), desc=desc, unit="img", disable=desc is None) as bar:
        for start in range(0, len(imageset), batch_size):
            idx = np.arange(start, min(start + batch_size, len(imageset)))
            images = data.uint8_batch(imageset, idx, num_workers, device.type == "cuda")
            images = transform(images.to(device, non_blocking=True))
            images = images.contiguous(memory_format=torch.channels_last)  # faster convolutions on CUDA and CPU
            with autocast(device):
                chunks.append(model.features(images).float())
            bar.update(len(idx))
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
        digest = bank.backbone_digest(backbone)[:16]
        return cls(paths.CACHE_DIR / "features" / f"eval_{digest}_{image_size}px_{cpu_paths()}.pt")

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

    def features(self, model, imageset, image_size: int, batch_size: int, device, num_workers: int = 0,
                 desc: str | None = None) -> torch.Tensor:
        """As `extract_features`, computing only the images whose id is not in the memo yet (`desc`: a bar over
        those)."""
        if self.model_ref is None:
            self.model_ref, self.image_size = id(model), image_size
        elif (self.model_ref, self.image_size) != (id(model), image_size):
            raise ValueError("a FeatureMemo serves one model at one image_size: make a new one per evaluation")
        ids = content_ids(imageset)
        if ids is None:  # also an empty set: extract_features raises its error
            self.computed += len(imageset)
            return extract_features(model, imageset, image_size, batch_size, device, num_workers, desc)
        missing = [i for i, key in enumerate(ids) if key not in self.rows]
        hit_keys = [key for key in ids.tolist() if key in self.rows]
        if missing:
            start = time.perf_counter()
            new = extract_features(model, imageset.subset(missing), image_size, batch_size, device, num_workers, desc)
            per_image = (time.perf_counter() - start) / len(missing)
            self.rows.update(zip(ids[missing].tolist(), new))
            self.cost.update((key, per_image) for key in ids[missing].tolist())
        self.hits += len(hit_keys)
        self.hit_seconds += sum(self.cost[key] for key in hit_keys)
        self.computed += len(missing)
        return torch.stack([self.rows[key] for key in ids.tolist()]).to(device)
