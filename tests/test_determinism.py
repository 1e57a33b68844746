"""Same bits on any x86-64 CPU with AVX2, Intel or AMD, and at any thread count (lib/__init__.py's pinned CPU paths,
lib.device.configure_cpu): a tiny source pretraining + feature bank + relational training runs in fresh
interpreters under two emulated CPUs, and their weights hash the same; MKL computes on an Intel CPU what it
computes on an AMD Zen CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import lib
from lib import config, device, runs
from lib.paths import REPO_ROOT

# a fresh interpreter: a tiny pretrain (10 glyph classes, 1 epoch) -> feature bank -> 5 relational steps, with every
# cache in a folder of its own, then the sha256 of the backbone and of the trained model's tensors
RUN = r"""
import hashlib, json, os, sys
from pathlib import Path
import lib
from lib import bank, config, pretrain, train
import torch
torch.set_num_threads(int(os.environ["THREADS"]))  # what the machine offers; a deterministic run takes one
tmp = Path(sys.argv[1])
pretrain.CACHE, bank.CACHE = tmp / "pretrained", tmp / "bank"
settings = config.resolve("smoke", say=lambda _: None, pretrained="source", pretrain_classes=10, pretrain_epochs=1,
                          source_classes=10, small_stem=False, train_backbone=False, steps=5, device="cpu",
                          run_dir=str(tmp / "run"))
train.train_stage(settings)
def digest(state):
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode() + state[name].detach().contiguous().numpy().tobytes())
    return h.hexdigest()
checkpoint = torch.load(tmp / "run" / "checkpoints" / "last.pt", weights_only=False)
print(json.dumps({"backbone": digest(torch.load(pretrain.weight_path(settings))), "model": digest(checkpoint["model"]),
                  "threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability()}))
"""
# What another CPU's libraries would choose by themselves: MKL's AVX branch, ATen's scalar kernels, oneDNN's AVX JIT
OTHER_CPU = {"MKL_CBWR": "AVX", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX"}


def run_tiny(tmp_path, name: str, threads: int, **environ) -> dict:
    env = lib.environ_without_cpu_choices()
    env.update(PYTHONPATH=str(REPO_ROOT), RESEND_OUTPUTS=str(tmp_path / name / "outputs"), THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), **environ)
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / name)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not torch.backends.cpu.get_cpu_capability().startswith("AVX"), reason="an x86-64 CPU with AVX2")
def test_pretrain_bank_and_training_give_the_same_bits_on_two_emulated_cpus_and_thread_counts(tmp_path):
    here = run_tiny(tmp_path, "here", threads=2)
    other = run_tiny(tmp_path, "other", threads=1, **OTHER_CPU)
    assert here["threads"] == other["threads"] == device.DETERMINISTIC_THREADS
    assert here["capability"] == other["capability"] == "AVX2"
    assert (here["backbone"], here["model"]) == (other["backbone"], other["model"])
    # the emulation has teeth: left to choose (RESEND_CPU_PATHS=native), that CPU's paths give other bits
    native = run_tiny(tmp_path, "native", threads=1, RESEND_CPU_PATHS="native", **OTHER_CPU)
    assert native["capability"] == "DEFAULT"
    assert native["backbone"] != here["backbone"] and native["model"] != here["model"]


# a GEMM (cache-blocked: MKL's kernels differ by vendor) and exp / log (MKL's vector math), hashed
MKL_OPS = r"""
import hashlib, lib, torch
torch.manual_seed(0)
a, b, x = torch.randn(257, 301), torch.randn(301, 263), torch.randn(1 << 16) * 3
digest = lambda t: hashlib.sha256(t.numpy().tobytes()).hexdigest()
print(lib.mkl_zen_branch(), digest(a @ b), digest(torch.exp(x)), digest(torch.log(x.abs() + 1)))
"""


def mkl_ops(**environ) -> list[str]:
    env = lib.environ_without_cpu_choices()
    done = subprocess.run([sys.executable, "-c", MKL_OPS], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **environ}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_mkl_computes_on_every_cpu_what_it_computes_on_an_amd_zen_cpu():
    assert lib.MKL_ZEN_BRANCH and lib.mkl_zen_branch() and lib.MKL_BRANCH_LIBRARY.exists()
    pinned = mkl_ops()
    # an AMD Zen CPU, emulated: MKL left to choose, its vendor checks answered before torch loads as on such a CPU
    zen = mkl_ops(RESEND_CPU_PATHS="native", LD_PRELOAD=str(lib.MKL_BRANCH_LIBRARY))
    own = mkl_ops(RESEND_CPU_PATHS="native")  # this CPU's own branch
    assert pinned[0] == zen[0] == "True" and own[0] == "False"
    assert pinned[1:] == zen[1:]
    # the emulation has teeth on an Intel CPU (another GEMM and vector math); on an AMD Zen it is that CPU's own
    intel = "GenuineIntel" in runs.cpu_model()
    assert all((p != o) == intel for p, o in zip(pinned[1:], own[1:]))


def test_a_deterministic_run_refuses_mkl_on_the_cpu_own_branch(monkeypatch):
    monkeypatch.setattr(lib, "MKL_ZEN_BRANCH", False)
    with pytest.raises(RuntimeError, match=r"MKL takes this CPU's own branch, not the pinned AMD Zen one .*make cpu-paths"):
        device.configure_cpu(config.resolve("smoke", say=lambda _: None, device="cpu"))


def test_pinning_overrides_what_the_environment_says_unless_native():
    environ = dict(OTHER_CPU)
    assert lib.pin_cpu_paths(environ) and environ == {**lib.CPU_PATHS}
    environ = {**OTHER_CPU, lib.CPU_PATHS_VARIABLE: "native"}
    assert not lib.pin_cpu_paths(environ) and {k: environ[k] for k in OTHER_CPU} == OTHER_CPU
    with pytest.raises(ValueError, match=r"RESEND_CPU_PATHS='avx512' is not pinned or native: unset it"):
        lib.pin_cpu_paths({lib.CPU_PATHS_VARIABLE: "avx512"})
    # a child given this environment chooses nothing itself: every CPU-path choice is dropped, the rest kept
    chosen = {**OTHER_CPU, lib.CPU_PATHS_VARIABLE: "native", "LD_PRELOAD": "zen.so", "HOME": "/home/u"}
    assert lib.environ_without_cpu_choices(chosen) == {"HOME": "/home/u"} and "LD_PRELOAD" in chosen


def test_a_deterministic_cpu_run_computes_on_one_thread_and_refuses_cpu_bf16():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        device.configure_cpu(config.resolve("smoke", say=lambda _: None, device="cpu"))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        device.configure_cpu(config.resolve("smoke", say=lambda _: None, device="cpu", deterministic=False))
        assert torch.get_num_threads() == 2  # not deterministic: the machine's threads
        with pytest.raises(ValueError, match="cpu_amp=True takes a CPU-dependent bf16 path"):
            device.configure_cpu(config.resolve("smoke", say=lambda _: None, device="cpu", cpu_amp=True))
    finally:
        torch.set_num_threads(threads)


def test_torch_loaded_before_lib_is_caught_before_a_deterministic_run(tmp_path):
    # the venv imports lib at start-up (its .pth): forget it, as a python without that file would never have run it
    code = ("import os, sys, torch\nos.environ.pop('MKL_CBWR', None)\n"
            "[sys.modules.pop(m) for m in list(sys.modules) if m == 'lib' or m.startswith('lib.')]\n"
            "import lib\nfrom lib import config, device\n"
            "device.configure_cpu(config.resolve('smoke', say=lambda _: None, device='cpu'))")
    env = lib.environ_without_cpu_choices()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("RuntimeError: torch was imported before lib")


def test_runs_record_their_cpu_path_and_caches_are_keyed_on_it(monkeypatch):
    from lib import pretrain

    settings = config.resolve("mini", say=lambda _: None)
    assert runs.environment()["cpu_paths"] == "avx2-mkl-zen"
    pinned = pretrain.weight_path(settings)
    monkeypatch.setattr(lib, "CPU_PATHS_PINNED", False)
    assert runs.environment()["cpu_paths"] == "native" and pretrain.weight_path(settings) != pinned


def test_a_run_records_the_cpu_it_ran_on(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                    "model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n\nprocessor\t: 1\nvendor_id\t: Other\n")
    assert runs.cpu_model(info) == "AuthenticAMD AMD EPYC 7B13 (family 25 model 1)"  # the first processor only
    assert runs.cpu_model(tmp_path / "absent") != ""  # no /proc/cpuinfo: what platform knows
    assert runs.environment()["cpu"] == runs.cpu_model()
