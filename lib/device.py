"""Where a run computes: its torch device and its mixed precision (bf16 autocast on CUDA; on the CPU fp32, or bf16
for the relational module with ``cpu_amp``)."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch


def resolve_device(settings) -> torch.device:
    """auto -> cuda if available else cpu; under torchrun the cuda device is cuda:LOCAL_RANK."""
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA GPU: use device=auto or cpu")
    if settings.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False):
    """bf16 autocast when `enabled` (settings.amp): on a CUDA `device` always, on the CPU only with `cpu`
    (settings.cpu_amp, for the relational module: bf16 matmuls run ~1.4x faster in training and ~2.5x in
    evaluation on CPUs with avx512_bf16/AMX, and slower on CPUs without); else a no-op context."""
    if not enabled:
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16) if cpu else nullcontext()

