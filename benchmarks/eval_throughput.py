"""Evaluation throughput: batched scoring (lib.evaluate) vs the reference's one-test-image-at-a-time loop.

Same model, same benchmark, same precision (bf16 autocast + channels_last on CUDA) in one run; only the batching
differs. Reference style = prototypes from the support features, then for each test image: its backbone features
(batch of 1), then its C (image, prototype) pairs through the relational module. The reference loop is timed on
the first ``--n-ref`` test images and extrapolated to the whole test set; both timings include the support-set
features. Prints test images/s of both and the ratio.

Command (repo root):
    .venv/bin/python benchmarks/eval_throughput.py --preset mini --benchmark glyph_printed --n-ref 100
GPU, paper-size model (224 px, d 768, 4 blocks):
    .venv/bin/python benchmarks/eval_throughput.py --preset paper --benchmark glyph_printed --n-ref 200

Measured (2 CPU cores, torch 2.14, 2026-11-29): smoke 92 vs 63 images/s = 1.5x; mini (standard stem) 803 vs
136 images/s = 5.9x. On CPU with the small stem the convolutions dominate and are compute-bound even one image at
a time, so batching gains little; with the standard stem the relational module's per-call overhead dominates. The
>= 50x target concerns CUDA, where one image per call is kernel-launch bound
(not measured yet: no GPU was available to this task). Scores agree to < 1e-6.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lib import config, data, evaluate, features, objectives, pretrain
from lib import model as model_lib
from lib.device import autocast, resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def reference_loop(model, objective, bench, settings, n_ref: int) -> tuple[float, np.ndarray]:
    """Seconds for the first n_ref test images scored one at a time, and their class similarities."""
    device = features.model_device(model)
    transform = data.eval_transform(settings.image_size)
    support = features.extract_features(model, bench.support, settings.image_size, settings.eval_batch_size)
    protos, _ = evaluate.build_prototypes(support, bench.support.labels, bench.num_known, "mean")
    sims = []
    sync(device)
    start = time.perf_counter()
    for i in range(n_ref):
        image = transform(bench.test.get_uint8(i).to(device))[None]
        if device.type == "cuda":
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            f = model.features(image)
            out = model.relate(f.expand(len(protos), -1), protos.to(f.dtype))
        sims.append(objective.similarity(out.float()).float().cpu())
    sync(device)
    return time.perf_counter() - start, torch.stack(sims).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--benchmark", default="glyph_printed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-ref", type=int, default=100, help="test images timed in the reference loop")
    parser.add_argument("--eval-batch-size", type=int, default=0, help="pairs per batch; 0 = the preset's")
    args = parser.parse_args()
    overrides = dict(device=args.device, pretrained="none", prototypes="mean")
    if args.eval_batch_size:
        overrides["eval_batch_size"] = args.eval_batch_size
    settings = config.resolve(args.preset, **overrides)
    device = resolve_device(settings)
    objective = objectives.make(settings.loss, **settings.objective_params())
    torch.manual_seed(0)
    model, _ = model_lib.build(settings, objective.out_dim, pretrain.backbone_weights(settings))
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    bench = data.load_benchmark(args.benchmark, settings)
    n_test, n_ref = len(bench.test), min(args.n_ref, len(bench.test))

    evaluate.score_benchmark(model, objective, bench, settings)  # warm-up (allocator, cudnn autotune)
    batched = evaluate.score_benchmark(model, objective, bench, settings)
    reference_loop(model, objective, bench, settings, min(5, n_ref))  # warm-up
    support_start = time.perf_counter()
    features.extract_features(model, bench.support, settings.image_size, settings.eval_batch_size)
    sync(device)
    support_s = time.perf_counter() - support_start
    loop_s, ref_sims = reference_loop(model, objective, bench, settings, n_ref)
    ref_total = support_s + loop_s * n_test / n_ref
    diff = float(np.abs(ref_sims - batched.similarities[:n_ref]).max())
    print(f"device={device} preset={args.preset} benchmark={args.benchmark} test={n_test} "
          f"support={len(bench.support)} classes={bench.num_known} image_size={settings.image_size} "
          f"eval_batch_size={settings.eval_batch_size}")
    print(f"batched:      {batched.seconds:9.3f} s  {n_test / batched.seconds:10.1f} images/s")
    print(f"batch-size-1: {ref_total:9.3f} s  {n_test / ref_total:10.1f} images/s "
          f"(loop timed on {n_ref} images, extrapolated)")
    print(f"speed-up: {ref_total / batched.seconds:.1f}x   max |similarity difference| = {diff:.2e}")


if __name__ == "__main__":
    main()
