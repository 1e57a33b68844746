"""Where a run computes: its torch device, its mixed precision (bf16 autocast on CUDA; on the CPU fp32, or bf16
for the relational module with ``cpu_amp``) and, for a deterministic CPU run, its float path (`configure_cpu`)."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

import lib

# Intra-op threads of a deterministic CPU run. The split of a reduction over threads (oneDNN's convolution
# gradients, ATen's sums) changes its rounding: measured, a seeded smoke pretrain + train gives other bits at 2
# threads than at 1, also with MKL in strict CNR mode. A deterministic run therefore computes on one thread, whatever
# the machine offers; parallelism comes from running runs side by side (the sweep's --jobs).
DETERMINISTIC_THREADS = 1


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A CPU `tensor` on `device` without making the host wait: on CUDA through pinned memory and a non-blocking copy
    (a copy from pageable memory blocks the host until every kernel queued before it has run, so a training step's
    input preparation would drain the GPU at each small copy); elsewhere plain `.to`."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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



def cpu_paths() -> str:
    """The CPU float path this process computes with, as recorded in env.json and in the cache keys of every
    backbone, bank and feature file: ``avx2-mkl-zen`` (`lib.CPU_PATHS` pinned: ATen and oneDNN on AVX2, MKL on its
    AMD Zen branch) or ``native`` (each CPU its own)."""
    return "avx2-mkl-zen" if lib.CPU_PATHS_PINNED else "native"


def configure_cpu(settings, device: torch.device | None = None) -> None:
    """Before a seeded run computes on the CPU with ``deterministic``: compute on `DETERMINISTIC_THREADS` threads and
    check that the pinned CPU paths are in force (one-line errors otherwise). No-op on CUDA or without
    ``deterministic``: the bits then depend on the machine, as the settings say."""
    device = resolve_device(settings) if device is None else device
    if not settings.deterministic or device.type != "cpu":
        return
    if settings.cpu_amp:
        raise ValueError("cpu_amp=True takes a CPU-dependent bf16 path (oneDNN's on CPUs with avx512_bf16, ATen's "
                         "loop elsewhere, 9x slower on AVX2-only CPUs): set cpu_amp false, or deterministic false")
    torch.set_num_threads(DETERMINISTIC_THREADS)
    if not lib.CPU_PATHS_PINNED:
        return
    if lib.CPU_PATHS_TOO_LATE:
        raise RuntimeError("torch was imported before lib, so its CPU libraries may take this CPU's own float path: "
                           "restart the kernel and import lib first (the project's .venv does so at start-up), or "
                           f"set {lib.CPU_PATHS_VARIABLE}=native to accept CPU-dependent bits")
    if not lib.MKL_ZEN_BRANCH:
        raise RuntimeError(f"MKL takes this CPU's own branch, not the pinned AMD Zen one ({lib.MKL_BRANCH_LIBRARY} "
                           "was not loaded before torch): run `make cpu-paths` (it builds lib/csrc/mkl_zen_branch.c; "
                           f"needs a C compiler) and restart, or set {lib.CPU_PATHS_VARIABLE}=native to accept "
                           "CPU-dependent bits")
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        raise RuntimeError(f"torch computes with {capability} kernels, not the pinned AVX2 ones (a CPU without AVX2, "
                           f"or torch loaded before lib): use an x86-64 CPU with AVX2, or set "
                           f"{lib.CPU_PATHS_VARIABLE}=native to accept CPU-dependent bits")
