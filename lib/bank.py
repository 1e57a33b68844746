"""Feature bank of the frozen-backbone regime (``train_backbone: false``; docs/METHOD.md §5 lets small presets freeze the
backbone and train r and c on a cached bank of augmented source features).

The bank holds, for every image of the training source set, ``bank_views`` (K) views drawn through the train
augmentation (docs/METHOD.md §3) plus 1 view through the eval transform, each passed once through the backbone in eval
mode (BN running statistics: the frozen backbone is a fixed function). The augmentation draws come from a fixed
seed (``BANK_SEED + view``), never from the run seed: every run and seed of a study shares one bank, and view k
is the same image whatever K is.

Cached as ``.cache/features/<hash>.pt``, the hash of its recipe: the backbone's content (sha1 of its state dict,
so source pretraining, an ImageNet file and a random init are told apart), dataset, image_size,
source_classes, bank_views, the source set's content (pixels + labels of an in-memory set; ids + labels of a
file set), BANK_SEED and the file format. Written atomically under a file lock (`runs.exclusive`, as for the
pretrained backbones), so notebooks started together build it once; a process reuses a bank it already loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib import data, paths, runs
from lib.device import cpu_paths
from lib.device import autocast
from lib.progress import bar as progress_bar
from lib.progress import each

CACHE = paths.CACHE_DIR / "features"
BANK_SEED = 20230  # augmentation draws of the bank; fixed, independent of the run seed
FORMAT = 1  # bump when the file layout or the way views are drawn changes
IMAGE_BATCH = 256  # images per backbone batch while building

_LOADED: dict[Path, "FeatureBank"] = {}


@dataclass
class FeatureBank:
    train: torch.Tensor  # (K, N, 512) float32 on CPU: K train-augmented views of each source image
    eval: torch.Tensor  # (N, 512) float32 on CPU: the eval-transform view
    recipe: dict
    path: Path


def _sha1(*chunks: bytes) -> str:
    digest = hashlib.sha1()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def backbone_digest(backbone: nn.Module) -> str:
    """sha1 of the backbone's state dict (names, shapes, values): the identity of the weights the bank saw."""
    digest = hashlib.sha1()
    for name, tensor in sorted(backbone.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def source_digest(source) -> str:
    """sha1 of the source set's content: its uint8 pixels and labels when held in memory (TensorImageSet),
    else its ids (relative paths) and labels (a file set is not decoded just to name it)."""
    labels = np.ascontiguousarray(source.labels, dtype=np.int64).tobytes()
    images = getattr(source, "images", None)
    if isinstance(images, torch.Tensor):
        return _sha1(b"pixels", labels, images.contiguous().numpy().tobytes())
    return _sha1(b"ids", labels, "\n".join(map(str, source.ids)).encode())


def recipe(backbone: nn.Module, source, settings, device=None) -> dict:
    """Everything that shapes the bank's features, `device` (default CPU) included: a bank a GPU computed (its own
    float path, bf16 with ``amp``) is another bank than the CPU's, under another name."""
    r = {"backbone": backbone_digest(backbone), "dataset": settings.dataset, "image_size": settings.image_size,
         "source_classes": settings.source_classes, "bank_views": settings.bank_views,
         "source": source_digest(source), "images": len(source), "seed": BANK_SEED, "format": FORMAT,
         "hflip": bool(getattr(source, "mirror_invariant", True)),  # the views' augmentation (data.augmentation)
         "augmentation": data.AUGMENTATION,
         "cpu_paths": cpu_paths()}  # the float path that computed the features (lib.device)
    kind = torch.device(device or "cpu").type
    if kind != "cpu":  # only then: a CPU bank keeps the name it always had
        r["device"] = f"{kind}, amp {bool(settings.amp)}"
    return r


def bank_path(r: dict) -> Path:
    """``.cache/features/<dataset>_<size>px_<K>views_<hash>.pt`` (hash of the recipe)."""
    digest = hashlib.sha1(json.dumps(r, sort_keys=True).encode()).hexdigest()[:16]
    return CACHE / f"{r['dataset']}_{r['image_size']}px_{r['bank_views']}views_{digest}.pt"


def feature_bank(backbone: nn.Module, source, settings, device=None, verbose: bool = False) -> FeatureBank:
    """The cached bank of `backbone` on `source` for `settings`' recipe; builds and writes it first when missing.

    `device` (default CPU) only says where the backbone runs while building; the bank is returned on CPU.
    """
    r = recipe(backbone, source, settings, device)
    path = bank_path(r)
    if path in _LOADED:
        return _LOADED[path]
    if not path.exists():
        with runs.exclusive(path):  # a second process asking for the same bank waits, then loads it
            if not path.exists():
                _build(backbone, source, settings, r, path, torch.device(device or "cpu"), verbose)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["recipe"] != r:
        raise ValueError(f"{path} holds another recipe than its name says: delete it and rebuild")
    _LOADED[path] = FeatureBank(state["train"], state["eval"], r, path)
    return _LOADED[path]


@torch.inference_mode()
def _features(backbone: nn.Module, images: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    with autocast(device, amp):
        return backbone(images.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()


def _build(backbone: nn.Module, source, settings, r: dict, path: Path, device: torch.device, verbose: bool) -> None:
    was_training = backbone.training
    backbone.eval()
    train_tf, eval_tf = data.augmentation(source, settings.image_size), data.eval_transform(settings.image_size)
    chunks = [np.arange(s, min(s + IMAGE_BATCH, len(source))) for s in range(0, len(source), IMAGE_BATCH)]
    workers = settings.num_workers  # decoders of a file-backed source (in-memory sets ignore it)
    views = []
    bar = progress_bar(total=(settings.bank_views + 1) * len(chunks), desc="feature bank", unit="batch",
                       disable=not verbose)
    try:
        with torch.random.fork_rng(devices=[]):  # the run's RNG streams are left exactly as they were
            for view in range(settings.bank_views):
                torch.manual_seed(BANK_SEED + view)
                views.append(torch.cat([_features(backbone, data.augment_batch(source, idx, train_tf, workers,
                                                                               device=device), device, settings.amp)
                                        for idx in each(chunks, bar)]))
        plain = torch.cat([_features(backbone, eval_tf(data.uint8_batch(source, idx, workers)), device, settings.amp)
                           for idx in each(chunks, bar)])
    finally:
        bar.close()
        backbone.train(was_training)
    buffer = io.BytesIO()
    torch.save({"train": torch.stack(views), "eval": plain, "recipe": r}, buffer)
    runs.atomic_write_bytes(path, buffer.getvalue())
    if verbose:
        print(f"feature bank: {settings.bank_views} + 1 views of {len(source)} images -> {path}")
