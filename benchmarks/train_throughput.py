"""Training throughput: the full step (inputs prepared from uint8 images, as `lib.train.train` does) vs the
device-only step (the same step on inputs already resident on the device), per_pair vs in_batch, and the
augmentation alone (batched on the device vs the per-image torchvision pipeline it replaced), in one run.

Each step is `lib.train.step_inputs` + `lib.train.train_step`, the two calls `lib.train.train` makes (sampler, uint8
batch to the device, per-image augmentation there, backbone, relate, loss, backward, clipping, optimiser).
Synthetic uint8 images in memory (the cost of a step does not depend on their content); warmup steps are not timed.
Prints seconds per step of both, their ratio (the share of a step spent preparing inputs), pairs/s, and the projected
time of ``--projected-steps`` (the paper's 33k) steps. Run from the repo root:

    .venv/bin/python benchmarks/train_throughput.py --steps 2 --warmup 1                    # mini, CPU
    python3 benchmarks/train_throughput.py --preset paper --pairing in_batch --steps 10    # GPU, the paper's setting

Measured 2026-11-23 on the shared, loaded 2-core CPU box (mini preset, 672 pairs/step): in_batch / per_pair 19.3x
pairs/s with ``--steps 2 --warmup 1``; in_batch passes 42x fewer images through the backbone per step (32 vs 1344).
Measured 2026-12-04, same box, augmentation of the mini preset's in_batch batches (32 px): see README.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from lib import augment, config, data, objectives, pairs, pretrain, train
from lib import model as model_lib
from lib.device import resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(settings, source, steps: int, warmup: int, resident: bool = False) -> tuple[float, float]:
    """(pairs/s, images/s) of `steps` timed training steps (`lib.train.step_inputs` + `lib.train.train_step`, what
    `train.train` runs each step, with a backbone pass) after `warmup` untimed ones. With `resident` the inputs of
    one sampled batch are prepared once, before timing, and every step trains on them: the device-only step."""
    device = resolve_device(settings)
    torch.manual_seed(settings.seed)
    objective = objectives.make(settings.loss, **settings.objective_params())
    net, _ = model_lib.build(settings, objective.out_dim, pretrain.backbone_weights(settings))
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    net = net.to(device, memory_format=memory_format).train()
    step_module = train.PairStep(net)
    optimizer = train.make_optimizer(net, settings)
    trainable = [p for p in net.parameters() if p.requires_grad]
    sampler = pairs.from_settings(settings, source.labels)
    transform = data.augmentation(source, settings.image_size)
    n_anchors = pairs.anchors_per_step(settings.batch_pairs, settings.neg_to_pos_ratio)
    batch = sampler.sample(n_anchors)
    prepared = train.step_inputs(batch, source, transform, device, memory_format) if resident else None
    n_pairs = n_images = 0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            tic = time.perf_counter()
        if not resident:
            batch = sampler.sample(n_anchors)
        inputs, a, b, target = prepared or train.step_inputs(batch, source, transform, device, memory_format)
        train.train_step(step_module, objective, optimizer, inputs, a, b, target, settings, device, trainable, i)
        if i >= warmup:  # train_step reads the loss value: the step has finished on the device
            n_pairs += batch.num_pairs
            n_images += len(batch.images)
    seconds = time.perf_counter() - tic
    return n_pairs / seconds, n_images / seconds


def augmentation_seconds(source, settings, n_images: int, repeats: int) -> tuple[float, float]:
    """Seconds per batch of `n_images` source images: (`data.augment_batch` with the training augmentation, batched
    on the device, as training does; the per-image torchvision pipeline it replaced, `augment.reference_transform`,
    on the CPU as before)."""
    device = resolve_device(settings)
    idx = np.arange(n_images) % len(source)
    batched = data.augmentation(source, settings.image_size)
    reference = data.augmentation(source, settings.image_size, augment.reference_transform)
    out = {}
    for name, run in (("batched", lambda: data.augment_batch(source, idx, batched, device=device)),
                      ("per_image", lambda: data.augment_batch(source, idx, reference).to(device))):
        run()  # warm-up
        sync(device)
        tic = time.perf_counter()
        for _ in range(repeats):
            run()
        sync(device)
        out[name] = (time.perf_counter() - tic) / repeats
    return out["batched"], out["per_image"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--pairing", default="both", choices=("both", "in_batch", "per_pair"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per measurement")
    parser.add_argument("--batch-pairs", type=int, default=0, help="pairs per step (0 = the preset's)")
    parser.add_argument("--image-size", type=int, default=0, help="image side (0 = the preset's)")
    parser.add_argument("--d-model", type=int, default=0, help="relational width (0 = the preset's)")
    parser.add_argument("--n-blocks", type=int, default=0, help="relational blocks (0 = the preset's)")
    parser.add_argument("--classes", type=int, default=60, help="synthetic source classes")
    parser.add_argument("--per-class", type=int, default=10, help="synthetic images per class")
    parser.add_argument("--projected-steps", type=int, default=33000, help="steps of the projection (paper: 33k)")
    parser.add_argument("--augment-repeats", type=int, default=5, help="batches timed in the augmentation comparison")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other setting (YAML value), e.g. --set lars=false")
    args = parser.parse_args()
    overrides = {"pretrained": "none", "device": args.device, "dataset": "glyph",  # data: the synthetic set below
                 **{k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}}
    for key, value in (("batch_pairs", args.batch_pairs), ("image_size", args.image_size), ("d_model", args.d_model),
                       ("n_blocks", args.n_blocks)):
        if value:
            overrides[key] = value
    if args.d_model and args.d_model % config.resolve(args.preset).n_heads:
        overrides["n_heads"] = 1
    base = config.resolve(args.preset, **overrides)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.classes * args.per_class, 3, base.image_size, base.image_size),
                           dtype=torch.uint8, generator=gen)
    source = data.TensorImageSet(images, np.repeat(np.arange(args.classes), args.per_class))
    device = resolve_device(base)
    print(f"preset {args.preset}: d_model {base.d_model}, blocks {base.n_blocks}, image {base.image_size}px, "
          f"{base.batch_pairs} pairs/step (k={base.neg_to_pos_ratio}), lars {base.lars}, amp {base.amp}, "
          f"channels_last {base.channels_last}, device {device}"
          f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    modes = ("per_pair", "in_batch") if args.pairing == "both" else (args.pairing,)
    results = {}
    for mode in modes:
        settings = config.resolve(args.preset, **overrides, pairing=mode)
        full = measure(settings, source, args.steps, args.warmup)
        resident = measure(settings, source, args.steps, args.warmup, resident=True)
        results[mode] = full
        step_full, step_resident = settings.batch_pairs / full[0], settings.batch_pairs / resident[0]
        hours = args.projected_steps * step_full / 3600
        print(f"{mode:>9}: full step {step_full:8.4f} s ({full[0]:9.1f} pairs/s, {full[1]:8.1f} images/s) | "
              f"device-only step {step_resident:8.4f} s | full / device-only = {step_full / step_resident:5.2f}x | "
              f"{args.projected_steps} steps: {hours:6.2f} h full, "
              f"{args.projected_steps * step_resident / 3600:6.2f} h device-only")
    if len(modes) == 2:
        print(f"in_batch / per_pair = {results['in_batch'][0] / results['per_pair'][0]:.1f}x pairs/s (full steps)")
    settings = config.resolve(args.preset, **overrides, pairing=modes[-1])
    n_images = len(pairs.from_settings(settings, source.labels).sample(
        pairs.anchors_per_step(settings.batch_pairs, settings.neg_to_pos_ratio)).images)
    batched, per_image = augmentation_seconds(source, settings, n_images, args.augment_repeats)
    print(f"augmentation of {n_images} images ({modes[-1]} batch): batched on {device} {batched:.4f} s, per-image "
          f"torchvision on cpu {per_image:.4f} s: per-image / batched = {per_image / batched:.1f}x")


if __name__ == "__main__":
    main()
