"""Where a run computes: its torch device and its mixed precision (bf16 autocast on CUDA, fp32 on the CPU)."""

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


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on a CUDA `device` when `enabled` (settings.amp); a no-op context on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled and device.type == "cuda" else nullcontext()
