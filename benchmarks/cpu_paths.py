"""What the pinned CPU float path costs: seconds per step of the mini recipe's two CPU workloads on one thread, under
the pinned path and under the paths it replaced, in one run (fresh interpreters, interleaved, median of repeats).

* ``relational``: one step of relational training on the bank (`lib.train.train_step` on random (N, 512) features,
  the mini preset's model, objective mse c=10, SGD, clipping): GEMMs, attention, GELU, layer norms (MKL, ATen);
* ``pretrain``: one source-pretraining step of the ResNet-18 (32 px, batch 128, forward + backward + SGD):
  convolutions (oneDNN) and the classifier (MKL).

Paths (``lib/__init__.py``): ``pinned`` = ATen and oneDNN on AVX2, MKL on its AMD Zen branch (the default);
``mkl-intel-avx2`` = the pin before (MKL on Intel's AVX2 CNR branch: an AMD CPU ignores it); ``native`` = each
library its own choice (AVX-512 and MKL's own branch on CPUs that have them). Ratios > 1: slower than ``pinned``::

    .venv/bin/python benchmarks/cpu_paths.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

import lib
import lib.runs
from lib.paths import REPO_ROOT

# the old pin is today's environment variables without the library (MKL_CBWR then pins Intel's AVX2 branch)
PATHS = {
    "pinned": {},
    "mkl-intel-avx2": {lib.CPU_PATHS_VARIABLE: "native", **lib.CPU_PATHS},
    "native": {lib.CPU_PATHS_VARIABLE: "native"},
}

# one fresh interpreter: `steps` timed steps of a workload after 2 untimed ones, on one thread; prints s/step
WORKLOAD = r"""
import sys, time
import lib
import torch
from lib import config, objectives, train
from lib import model as model_lib
torch.set_num_threads(1)
torch.manual_seed(0)
kind, steps = sys.argv[1], int(sys.argv[2])
settings = config.resolve("mini", say=lambda _: None, **objectives.config_settings("mse_c10"))
if kind == "relational":
    net, _ = model_lib.build(settings, 1, (None, "random"))
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    module, objective = train.PairStep(net, frozen=True), objectives.make(settings.loss, **settings.objective_params())
    optimizer = train.make_optimizer(net, settings)
    trainable = [p for p in net.parameters() if p.requires_grad]
    feats = torch.randn(2 * settings.batch_pairs, 512)
    a, b = torch.arange(settings.batch_pairs), torch.arange(settings.batch_pairs, 2 * settings.batch_pairs)
    target = (torch.rand(settings.batch_pairs) < 0.5).long()
    def step():
        train.train_step(module, objective, optimizer, feats, a, b, target, settings, torch.device("cpu"), trainable)
else:
    from torchvision.models import resnet18
    net = resnet18(num_classes=1000)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(128, 3, 32, 32), torch.randint(0, 1000, (128,))
    def step():
        loss = torch.nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
for _ in range(2):
    step()
started = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - started) / steps)
"""


def seconds_per_step(path: str, kind: str, steps: int) -> float:
    env = lib.environ_without_cpu_choices()
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", **PATHS[path])
    done = subprocess.run([sys.executable, "-c", WORKLOAD, kind, str(steps)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{path} {kind} failed: {done.stderr.strip().splitlines()[-1]}")
    return float(done.stdout.split()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per path and workload")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    args = parser.parse_args(argv)
    print(f"CPU: {lib.runs.cpu_model()}; {args.repeats} interleaved repeats of {args.steps} steps, 1 thread\n")
    print("| workload | path | s / step (median) | ratio to pinned |")
    print("|---|---|---|---|")
    for kind in ("relational", "pretrain"):
        times: dict[str, list[float]] = {path: [] for path in PATHS}
        for _ in range(args.repeats):
            for path in PATHS:
                times[path].append(seconds_per_step(path, kind, args.steps))
        pinned = statistics.median(times["pinned"])
        for path, values in times.items():
            median = statistics.median(values)
            print(f"| {kind} | {path} | {median:.4f} | {median / pinned:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
