"""ReSeND / ICIAP-2023 relational novelty detection: the thin library behind the notebooks.

Label convention, used everywhere: a pair of images of the same class has label ``SAME = 1``,
a pair of different classes ``DIFFERENT = 0``.

CPU code paths. Importing ``lib`` pins the float paths of torch's CPU libraries before torch loads, so a seeded CPU
run gives the same bits on every x86-64 CPU with AVX2, Intel or AMD: ATen's vectorised kernels and oneDNN's JIT
kernels run their AVX2 code (`CPU_PATHS`; AVX-512 kernels sum in another order), and oneMKL (GEMM, vector math) runs
the branch it takes on an AMD Zen CPU on every CPU: a three-function library (`lib/csrc/mkl_zen_branch.c`, built by
`make cpu-paths`) answers MKL's vendor checks before torch loads (`MKL_BRANCH_LIBRARY`). On Intel CPUs MKL would
otherwise take an Intel branch, and on AMD CPUs it ignores every MKL_CBWR branch but AUTO and COMPATIBLE (COMPATIBLE
included, its Zen GEMM stays): the two vendors' GEMM and exp / log kernels round differently (docs/cross_machine.md).
The project's venv imports lib at interpreter start (a ``.pth`` file, `make setup`), which covers a notebook that
imports torch before lib. ``RESEND_CPU_PATHS=native`` leaves every library its own choice (faster on AVX-512 CPUs;
bits then depend on the CPU). `lib.device.configure_cpu` checks that the pinning took effect before a deterministic
run computes.
"""

import ctypes
import os
import sys
from pathlib import Path

SAME = 1
DIFFERENT = 0

# MKL_CBWR: ignored on the Zen branch (AUTO, AVX2,STRICT, COMPATIBLE, AVX512 and SSE4_2 give the same bits there);
# it still pins Intel's AVX2 branch where the library is missing (then a deterministic run refuses to start)
CPU_PATHS = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CPU_PATHS_VARIABLE = "RESEND_CPU_PATHS"  # pinned (default) | native


def pin_cpu_paths(environ=os.environ) -> bool:
    """Set `CPU_PATHS` in `environ` (overriding what was there) unless ``RESEND_CPU_PATHS=native``; returns whether
    they are pinned. Raises ValueError on another value of that variable."""
    choice = environ.get(CPU_PATHS_VARIABLE, "pinned")
    if choice not in ("pinned", "native"):
        raise ValueError(f"{CPU_PATHS_VARIABLE}={choice!r} is not pinned or native: unset it (pinned, the default) "
                         "or set it to native")
    if choice == "pinned":
        environ.update(CPU_PATHS)
    return choice == "pinned"


def environ_without_cpu_choices(environ=os.environ) -> dict[str, str]:
    """A copy of `environ` without any choice of CPU float path (`CPU_PATHS`, ``RESEND_CPU_PATHS``, ``LD_PRELOAD``):
    a child interpreter started with it takes lib's default, pinned, plus whatever its caller adds (tests and
    benchmarks that emulate other CPUs)."""
    return {k: v for k, v in environ.items() if k not in (*CPU_PATHS, CPU_PATHS_VARIABLE, "LD_PRELOAD")}


# `make cpu-paths` builds lib/csrc/mkl_zen_branch.c here, in the environment's own lib/ (the venv's: .venv/lib)
MKL_BRANCH_LIBRARY = Path(sys.prefix) / "lib" / "resend_mkl_zen_branch.so"


def mkl_zen_branch() -> bool:
    """Whether MKL's vendor checks answer "an AMD Zen CPU" in this process: the first definitions in its global
    scope, which MKL's dispatcher calls, are `MKL_BRANCH_LIBRARY`'s (or this is a Zen CPU whose torch is global)."""
    scope = ctypes.CDLL(None)
    try:
        return scope.mkl_serv_intel_cpu_true() == 0 and scope.mkl_serv_cpuiszen() == 1
    except AttributeError:  # torch's libraries are loaded locally and no library answers before them
        return False


def load_mkl_zen_branch(library: Path = MKL_BRANCH_LIBRARY) -> bool:
    """Load `library` into the global scope (before torch, or it comes too late) when it exists; returns
    `mkl_zen_branch()`."""
    if library.exists():
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    return mkl_zen_branch()


# torch reads these when its libraries first compute: too late once torch is loaded (then it may have read others)
_LOADED_FIRST = "torch" in sys.modules and any(os.environ.get(k) != v for k, v in CPU_PATHS.items())
CPU_PATHS_PINNED = pin_cpu_paths()
CPU_PATHS_TOO_LATE = CPU_PATHS_PINNED and _LOADED_FIRST
# torch binds MKL's vendor checks when it loads: the library must be in the global scope before that
MKL_ZEN_BRANCH = CPU_PATHS_PINNED and (mkl_zen_branch() or ("torch" not in sys.modules and load_mkl_zen_branch()))
