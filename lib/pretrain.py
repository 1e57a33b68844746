"""Source pretraining: the stand-in for ImageNet weights on the embedded data (``pretrained: source``).

ReSeND's backbone starts from torchvision's ImageNet classifier, i.e. a network trained *with labels on the same
source set* the relational module is then trained on (docs/METHOD.md §2). No weights can be downloaded here, so
``pretrained: source`` recreates that starting point: a ResNet-18 classifier of the source classes (glyph: the
printed-font images of every source character, never a benchmark character), trained once per recipe with the
one supervised classifier loop (`lib.supervised.train_classifier`: SGD + cosine, train augmentation) and
cached as a torchvision-layout state dict under ``.cache/pretrained/``. Every run and seed of a study then starts
from the same weights, as every ICIAP run starts from the same ImageNet weights.

Measured on 2 CPU cores (mini: glyph, 32 px, 1,000 classes x 13 fonts, 5 epochs): see README "Measured numbers".
Without it, relational training from random init stays on the label-prior plateau for the whole mini budget.

Command line (builds the cache ahead of a sweep; a second call only prints where it is)::

    python -m lib.pretrain --set preset=mini
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from lib import cli, config, paths, runs, supervised
from lib import data as _data
from lib.backbone import find_pretrained, resnet18_features, trunk_of
from lib.datasets import glyphs as _glyphs
from lib.device import configure_cpu, cpu_paths

CACHE = paths.CACHE_DIR / "pretrained"
BATCH = 128  # images per step
ACCURACY_IMAGES = 4000  # source images scored (eval transform) for the fit accuracy in the metadata


def recipe(settings) -> dict:
    """Everything that shapes the pretrained weights."""
    return {"dataset": settings.dataset, "image_size": settings.image_size, "small_stem": settings.small_stem,
            "classes": settings.pretrain_classes, "epochs": settings.pretrain_epochs, "lr": settings.pretrain_lr,
            "batch": BATCH, "seed": settings.pretrain_seed, "weight_decay": settings.weight_decay, "momentum": settings.momentum,
            "channels_last": settings.channels_last,  # the convolutions' layout changes the rounding
            "hflip": settings.dataset not in _data.MIRROR_VARIANT,  # the augmentation (data.augmentation)
            "augmentation": _data.AUGMENTATION,  # its implementation (lib.augment.VERSION): another draws other views
            "data_root": settings.data_root if settings.dataset == "imagenet" else "",
            # glyph: which characters are source and which are benchmark (a new plan must not reuse old weights)
            "char_plan": _glyphs.plan_fingerprint() if settings.dataset == "glyph" else "",
            "cpu_paths": cpu_paths()}  # the float path (lib.device): a backbone of another path is another backbone


def weight_path(settings) -> Path:
    """``.cache/pretrained/resnet18_<dataset>_<size>px_<classes>cls_<epochs>ep_<hash>.pth`` (hash of the recipe)."""
    r = recipe(settings)
    digest = hashlib.sha1(json.dumps(r, sort_keys=True).encode()).hexdigest()[:8]
    stem = "_small" if r["small_stem"] else ""
    classes = r["classes"] or "all"
    return CACHE / f"resnet18_{r['dataset']}_{r['image_size']}px{stem}_{classes}cls_{r['epochs']}ep_{digest}.pth"


def source_backbone(settings, verbose: bool = True) -> Path:
    """The cached source-pretrained backbone of `settings`' recipe; trains and writes it first when missing.

    Writes ``<name>.pth`` (ResNet-18 state dict without fc, torchvision key layout) and ``<name>.json``
    (recipe, images, classes, seconds, steps, fit accuracy on the source images). Both are written atomically;
    a file lock makes concurrent callers (notebooks started together, torchrun ranks) build it once.
    """
    path = weight_path(settings)
    if path.exists():
        return path
    with runs.exclusive(path):
        if path.exists():  # built by another process while this one waited
            return path
        return _build(settings, path, verbose)


def backbone_weights(settings) -> tuple[Path | None, str]:
    """(weight file or None, what it is) a backbone of `settings` starts from: ``source`` trains (once, cached) a
    classifier of the source classes as the stand-in for ImageNet weights (`source_backbone`); the others go to
    `lib.backbone.find_pretrained` (None = random init)."""
    if settings.pretrained == "source":
        return source_backbone(settings), f"source classifier ({settings.dataset})"
    return find_pretrained(settings.pretrained), "imagenet"


def _build(settings, path: Path, verbose: bool) -> Path:
    if settings.pretrain_epochs < 1:
        raise ValueError(f"pretrained=source needs pretrain_epochs >= 1, got {settings.pretrain_epochs}")
    configure_cpu(settings)  # a deterministic CPU build: one thread, the pinned float path
    r = recipe(settings)
    source = _data.load_source(dataclasses.replace(settings, source_classes=settings.pretrain_classes))
    num_classes = int(np.max(source.labels)) + 1
    torch.manual_seed(settings.pretrain_seed)
    net = resnet18_features(settings.small_stem)
    clf = supervised.Classifier(trunk_of(net), num_classes)
    loop = dataclasses.replace(settings, baseline_lr=settings.pretrain_lr, baseline_batch=BATCH, seed=settings.pretrain_seed)
    if verbose:
        print(f"pretraining a ResNet-18 on {len(source)} {settings.dataset} source images of {num_classes} classes "
              f"({settings.pretrain_epochs} epochs) -> {path}")
    spent = supervised.train_classifier(clf, supervised.cross_entropy_loss, source, loop,
                                        epochs=settings.pretrain_epochs, desc="pretrain" if verbose else None)
    rows = np.random.default_rng(settings.pretrain_seed).permutation(len(source))[:ACCURACY_IMAGES]
    subset = source.subset(rows)
    logits = supervised.infer(clf, subset, loop)["logits"]
    accuracy = float((logits.argmax(1).numpy() == np.asarray(subset.labels)).mean())
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    runs.atomic_write_bytes(path, buffer.getvalue())
    meta = {"recipe": r, "images": len(source), "classes": num_classes, "fit_accuracy": accuracy, **spent}
    runs.atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    if verbose:
        print(f"pretrained in {spent['train_seconds']:.0f} s, fit accuracy {accuracy:.3f}")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build the source-pretrained backbone of a preset (pretrained=source).")
    parser.add_argument("--config", help="YAML of settings; may hold `preset:` plus overrides")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    args = parser.parse_args(argv)
    settings = config.settings_from_cli((["--config", args.config] if args.config else []) +
                                        [x for item in args.set for x in ("--set", item)])
    path = source_backbone(settings)
    print(path)


if __name__ == "__main__":
    raise SystemExit(cli.run(main, prog="lib.pretrain"))
