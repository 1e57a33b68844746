"""Training throughput, pairs per second: per_pair (reference, 2 backbone passes per pair) vs in_batch (ours).

Same model (mini preset sizes), same pairs per step, same machine, one process; warmup steps are excluded. Each
step is `lib.train.train_step`, the one `lib.train.train` runs (autocast, loss, clipping, optimiser as trained).
Synthetic uint8 images (the cost of a step does not depend on their content). Run from the repo root:

    .venv/bin/python benchmarks/train_throughput.py --steps 3 --warmup 1

Prints pairs/s of both modes and their ratio (target on a 2-core CPU: in_batch >= 15x per_pair).
Measured 2026-11-23 on the shared, loaded 2-core CPU box (mini preset, 672 pairs/step): 19.3x with
``--steps 2 --warmup 1`` (per_pair 7.7, in_batch 149.5 pairs/s); 114.5x with ``--steps 1``; 16.8x at
``--batch-pairs 168 --steps 2``. Other jobs shared the cores, so the figure is noisy; in_batch passes 42x fewer
images through the backbone per step (32 vs 1344).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lib import config, data, objectives, pairs, pretrain, train
from lib import model as model_lib
from lib.device import resolve_device


def measure(settings, source, steps: int, warmup: int) -> tuple[float, float]:
    """(pairs/s, images/s) of `steps` timed training steps (`lib.train.train_step`, the step `train.train` runs, with
    a backbone pass per step) after `warmup` untimed ones."""
    device = resolve_device(settings)
    cuda = device.type == "cuda"
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
    n_pairs = n_images = 0
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            tic = time.perf_counter()
        batch = sampler.sample(n_anchors)
        inputs, a, b, target = train.step_inputs(batch, source, transform, device, memory_format)
        train.train_step(step_module, objective, optimizer, inputs, a, b, target, settings, device, trainable, i)
        if i >= warmup:  # train_step reads the loss value: the step has finished on the device
            n_pairs += batch.num_pairs
            n_images += len(batch.images)
    seconds = time.perf_counter() - tic
    return n_pairs / seconds, n_images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    parser.add_argument("--batch-pairs", type=int, default=0, help="pairs per step (0 = the preset's)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    overrides = {"pretrained": "none", "device": args.device}
    if args.batch_pairs:
        overrides["batch_pairs"] = args.batch_pairs
    base = config.resolve(args.preset, **overrides)
    gen = torch.Generator().manual_seed(0)
    n_classes, per_class = 60, 10
    images = torch.randint(0, 256, (n_classes * per_class, 3, base.image_size, base.image_size), dtype=torch.uint8,
                           generator=gen)
    source = data.TensorImageSet(images, np.repeat(np.arange(n_classes), per_class))
    print(f"preset {args.preset}: d_model {base.d_model}, blocks {base.n_blocks}, image {base.image_size}px, "
          f"{base.batch_pairs} pairs/step (k={base.neg_to_pos_ratio}), device {resolve_device(base)}, "
          f"torch threads {torch.get_num_threads()}")
    results = {}
    for mode in ("per_pair", "in_batch"):
        settings = config.resolve(args.preset, **overrides, pairing=mode)
        results[mode] = measure(settings, source, args.steps, args.warmup)
        print(f"{mode:>9}: {results[mode][0]:9.1f} pairs/s  ({results[mode][1]:8.1f} images/s)")
    print(f"in_batch / per_pair = {results['in_batch'][0] / results['per_pair'][0]:.1f}x pairs/s")


if __name__ == "__main__":
    main()
