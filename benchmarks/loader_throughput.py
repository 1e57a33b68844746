"""Decode throughput of a file-backed set: training batches (decode the original, RandomResizedCrop, the rest of
`data.train_transform`) built in the main process (num_workers 0) and in N persistent DataLoader workers, in one run
on one fixture folder. Prints images/s of both and their ratio; checks the batches are identical.

The fixture: `--images` JPEGs of ImageNet's typical size (500x375, random smooth colour fields, fixed seed) in a
temporary folder. The workers' start-up (the first batch) is timed apart: persistent workers pay it once per set.

Command (repo root):
    PYTHONPATH=. .venv/bin/python benchmarks/loader_throughput.py --workers 2 --images 256 --batch 32 --size 64

Measured (2 CPU cores shared with other jobs, load average 5, torch 2.14, 2026-11-30; --workers 2 --images 256
--batch 32 --size 64): 219.6 images/s with 0 workers, 215.5 with 2 = 0.98x (other runs under that load: 0.79-1.00x).
The machine gave this job ~0.6-0.75 of a core either way, so the workers could not add cores; what they cost is
2.77 -> 3.42 CPU ms/image (the transformed batches cross processes). On idle cores the decode scales with the
workers up to that ~20 % overhead: not measured here (no free cores, no device machine for this task).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lib import data
from lib.datasets.imagesets import FileImageSet


def fixture(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)  # upsampled: JPEG-typical content and file size
        paths.append(folder / f"{k:05d}.jpg")
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(paths[-1], quality=90)
    return paths


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of processes `pids` so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def timed(imageset, batches, transform, workers: int) -> tuple[float, dict, dict, bool]:
    """(seconds of the workers' first batch, {mode: wall seconds}, {mode: CPU seconds of this process and the
    workers}, identical batches) for modes 0 and `workers`.

    The two are timed batch by batch, alternately (which one goes first alternates too), so both see the same
    load of a shared machine; the first batch (the workers' start) is timed apart."""
    torch.manual_seed(0)
    tic = time.perf_counter()
    data.augment_batch(imageset, batches[0], transform, workers)
    start = time.perf_counter() - tic
    (_, loader, _), = imageset._loaders.values()
    pids = [os.getpid()] + [w.pid for w in loader._iterator._workers]
    wall, cpu = {0: 0.0, workers: 0.0}, {0: 0.0, workers: 0.0}
    same = True
    for k, idx in enumerate(batches[1:]):
        out = {}
        for w in ((0, workers) if k % 2 == 0 else (workers, 0)):
            torch.manual_seed(k)
            cpu0, tic = cpu_seconds(pids), time.perf_counter()
            out[w] = data.augment_batch(imageset, idx, transform, w)
            wall[w] += time.perf_counter() - tic
            cpu[w] += cpu_seconds(pids) - cpu0
        same &= torch.equal(out[0], out[workers])
    return start, wall, cpu, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=2, help="passes over the folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = fixture(Path(tmp), args.images)
        imageset = FileImageSet(paths, np.zeros(len(paths), dtype=np.int64), args.size)
        order = np.random.default_rng(1).permutation(len(paths))
        batches = [order[s:s + args.batch] for s in range(0, len(order) - args.batch + 1, args.batch)]
        transform = data.train_transform(args.size)
        start, wall, cpu, same = timed(imageset, batches * args.passes, transform, args.workers)
    images = args.batch * (len(batches) * args.passes - 1)
    print(f"{args.images} JPEGs 500x375 -> {args.size} px, {images} images in batches of {args.batch} for each; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for w in (0, args.workers):
        print(f"num_workers {w}: {images / wall[w]:7.1f} images/s, {1000 * cpu[w] / images:.2f} CPU ms/image, "
              f"{cpu[w] / wall[w]:.2f} cores busy" + (f" (workers' start: {start:.2f} s, once)" if w else ""))
    print(f"ratio {wall[0] / wall[args.workers]:.2f}x; identical batches: {same}")

if __name__ == "__main__":
    main()
