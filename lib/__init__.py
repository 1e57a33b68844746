"""ReSeND / ICIAP-2023 relational novelty detection: the thin library behind the notebooks.

Label convention, used everywhere: a pair of images of the same class has label ``SAME = 1``,
a pair of different classes ``DIFFERENT = 0``.

CPU code paths. Importing ``lib`` pins the instruction-set paths of torch's CPU libraries to AVX2 before torch loads
(`CPU_PATHS`: MKL's conditional numerical reproducibility in strict mode, ATen's vectorised kernels and oneDNN's
JIT kernels), so a seeded CPU run takes the same float path on every Intel x86-64 CPU with AVX2 instead of the best
one each CPU offers (AVX-512 kernels sum in another order). On other CPUs oneMKL runs its AUTO branch whatever
MKL_CBWR names (its documented rule: only AUTO and COMPATIBLE are for non-Intel CPUs): there GEMM and MKL's vector
math may round otherwise, and runs stay within the bound of docs/cross_machine.md, not bit-identical. The project's
venv sets them at interpreter start too (a ``.pth`` file, `make setup`), which covers a notebook that imports torch
before lib. ``RESEND_CPU_PATHS=native``
leaves every library its own choice (faster on AVX-512 CPUs; bits then depend on the CPU). `lib.device.configure_cpu`
checks that the pinning took effect before a deterministic run computes.
"""

import os
import sys

SAME = 1
DIFFERENT = 0

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


# torch reads these when its libraries first compute: too late once torch is loaded (then it may have read others)
_LOADED_FIRST = "torch" in sys.modules and any(os.environ.get(k) != v for k, v in CPU_PATHS.items())
CPU_PATHS_PINNED = pin_cpu_paths()
CPU_PATHS_TOO_LATE = CPU_PATHS_PINNED and _LOADED_FIRST
