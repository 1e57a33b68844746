"""SSOD's input size: the last feature map's size and the seconds per training step of ResNet-18 at each candidate.

SSOD needs a last feature map with real locations (docs/METHOD.md §10); at 32 px the standard stem leaves 1x1. Candidates: the
standard stem upsampled to 64/128/224 px, or the small stem at 32 px. One thread, batch 32, forward + backward of
the CE on the GAP feature, random init; the best of two steps after one warm-up step.

Command (repo root):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ssod_map_size.py

Measured (2-core CPU, 1 thread, torch 2.14, another job on the other core): standard stem 32 px 1x1 0.13 s/step,
64 px 2x2 0.31 s, 128 px 4x4 1.17 s, 224 px 7x7 3.47 s; small stem 32 px 4x4 1.04 s. Chosen: upsample to 128 px
with the standard stem (lib/baselines/ssod.py, `input_size`).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from lib.backbone import resnet18_features, trunk_of

CANDIDATES = ((False, 32), (True, 32), (False, 64), (False, 128), (False, 224))  # (small stem, px)


def main(batch: int = 32, classes: int = 15) -> None:
    torch.set_num_threads(1)
    for small_stem, size in CANDIDATES:
        torch.manual_seed(0)
        trunk = trunk_of(resnet18_features(small_stem)).to(memory_format=torch.channels_last)
        fc = torch.nn.Linear(512, classes)
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (batch,))
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            fmap = trunk(x)
            F.cross_entropy(fc(fmap.mean((2, 3))), y).backward()
            seconds.append(time.perf_counter() - start)
        stem = "small" if small_stem else "standard"
        print(f"{stem} stem {size} px: map {tuple(fmap.shape[2:])}, {min(seconds[1:]):.2f} s/step", flush=True)


if __name__ == "__main__":
    main()
