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

Without fonts (a GPU node, scripts/gpu_check.sh): ``--synthetic`` scores a benchmark of random uint8 images at the
preset's image size, shaped like glyph_printed (50 known classes x 7 support images, 100 classes x 6 test images).
The batched time is also split into its parts, each on its own (uint8 images to normalised device tensors; backbone
on resident tensors; relational module on resident features), to show which one limits it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

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


def synthetic_benchmark(image_size: int, num_known: int = 50, support_per_class: int = 7,
                        test_per_class: int = 6) -> data.Benchmark:
    """Random uint8 images shaped like glyph_printed: `num_known` known classes in the support, as many unknown
    ones besides them in the test set."""
    gen = torch.Generator().manual_seed(0)

    def images(classes: int, per_class: int) -> data.TensorImageSet:
        pixels = torch.randint(0, 256, (classes * per_class, 3, image_size, image_size), dtype=torch.uint8,
                               generator=gen)
        return data.TensorImageSet(pixels, np.repeat(np.arange(classes), per_class),
                                   ids=[f"synthetic:{classes}:{i}" for i in range(classes * per_class)])

    return data.Benchmark("synthetic", "intra", images(num_known, support_per_class),
                          images(2 * num_known, test_per_class), num_known, "synthetic", "synthetic")


@torch.inference_mode()
def batched_parts(model, objective, bench, settings) -> dict[str, float]:
    """Seconds of each part of batched scoring, each timed alone on resident inputs: ``inputs`` (uint8 batches to
    normalised device tensors, `features.extract_features`' preparation), ``backbone`` (features of the prepared
    images), ``relate`` (`evaluate.pair_similarities` on the features)."""
    device = features.model_device(model)
    transform = data.eval_transform(settings.image_size)
    batch = min(settings.eval_batch_size, features.IMAGE_BATCH)
    parts, prepared = {}, []
    sync(device)
    tic = time.perf_counter()
    for imageset in (bench.support, bench.test):
        for start in range(0, len(imageset), batch):
            idx = np.arange(start, min(start + batch, len(imageset)))
            images = transform(data.uint8_batch(imageset, idx, 0, device.type == "cuda").to(device, non_blocking=True))
            prepared.append(images.contiguous(memory_format=torch.channels_last))
    sync(device)
    parts["inputs"] = time.perf_counter() - tic
    tic = time.perf_counter()
    with autocast(device):
        feats = [model.features(images).float() for images in prepared]
    sync(device)
    parts["backbone"] = time.perf_counter() - tic
    n_support = -(-len(bench.support) // batch)
    support, test = torch.cat(feats[:n_support]), torch.cat(feats[n_support:])
    protos, _ = evaluate.build_prototypes(support, bench.support.labels, bench.num_known, "mean")
    sync(device)
    tic = time.perf_counter()
    evaluate.pair_similarities(model, objective, test, protos, settings.eval_batch_size, settings.cpu_amp)
    sync(device)
    parts["relate"] = time.perf_counter() - tic
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--benchmark", default="glyph_printed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other setting (YAML value), e.g. --set lars=false")
    parser.add_argument("--n-ref", type=int, default=100, help="test images timed in the reference loop")
    parser.add_argument("--eval-batch-size", type=int, default=0, help="pairs per batch; 0 = the preset's")
    parser.add_argument("--synthetic", action="store_true", help="random images shaped like glyph_printed (no fonts)")
    parser.add_argument("--synthetic-classes", type=int, default=50, help="known (= unknown) classes of --synthetic")
    parser.add_argument("--image-size", type=int, default=0, help="image side (0 = the preset's)")
    parser.add_argument("--d-model", type=int, default=0, help="relational width (0 = the preset's)")
    parser.add_argument("--n-blocks", type=int, default=0, help="relational blocks (0 = the preset's)")
    parser.add_argument("--target", type=float, default=50.0, help="speed-up target printed beside the result")
    args = parser.parse_args()
    overrides = dict(device=args.device, pretrained="none", prototypes="mean",
                     **{k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    for key, value in (("eval_batch_size", args.eval_batch_size), ("image_size", args.image_size),
                       ("d_model", args.d_model), ("n_blocks", args.n_blocks)):
        if value:
            overrides[key] = value
    if args.d_model and args.d_model % config.resolve(args.preset).n_heads:
        overrides["n_heads"] = 1
    settings = config.resolve(args.preset, **overrides)
    device = resolve_device(settings)
    objective = objectives.make(settings.loss, **settings.objective_params())
    torch.manual_seed(0)
    model, _ = model_lib.build(settings, objective.out_dim, pretrain.backbone_weights(settings))
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    bench = (synthetic_benchmark(settings.image_size, args.synthetic_classes) if args.synthetic
             else data.load_benchmark(args.benchmark, settings))
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
    parts = batched_parts(model, objective, bench, settings)
    print(f"device={device} preset={args.preset} benchmark={bench.name} test={n_test} "
          f"support={len(bench.support)} classes={bench.num_known} image_size={settings.image_size} "
          f"eval_batch_size={settings.eval_batch_size}")
    print(f"batched:      {batched.seconds:9.3f} s  {n_test / batched.seconds:10.1f} images/s")
    print(f"batch-size-1: {ref_total:9.3f} s  {n_test / ref_total:10.1f} images/s "
          f"(loop timed on {n_ref} images, extrapolated)")
    print("batched parts, each alone: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items()))
    speedup = ref_total / batched.seconds
    print(f"speed-up: {speedup:.1f}x (target >= {args.target:g}x: {'met' if speedup >= args.target else 'NOT met'})   "
          f"max |similarity difference| = {diff:.2e}")


if __name__ == "__main__":
    main()
