"""Relational training (docs/METHOD.md §5): SGD + linear warmup (+ LARS), bf16 autocast on CUDA, checkpoints, resume, DDP.

Small presets may instead use AdamW, a cosine schedule, gradient clipping and ``train_backbone=False``: the
backbone is frozen and r + c train on a cached bank of train-augmented source features (`lib.bank`); a step
then picks one of each image's ``bank_views`` views (torch RNG of the run, so resume stays bit-identical) and
runs no backbone at all. The checkpoint holds the full model either way.

One step: sample a `PairBatch` -> load its images (uint8) -> augment each image independently -> one backbone
pass -> index the feature matrix into pairs -> relate -> objective loss. ``per_pair`` and ``in_batch`` differ
only in the batch the sampler draws. `train` reads as its parts: `stored_state` (checks; a finished run's history)
-> `setup` (a `Run`: backbone weights resolved first, model, optimiser, sampler, a resumed run's states, bank)
-> `loop` (the steps) -> `save` (the checkpoint).

Run folder outputs: ``history.csv`` (step, loss, acc_same, acc_diff, lr, pairs_per_s, images_per_s, seconds) and
``checkpoints/last.pt`` (a dict: model, optimizer, scheduler, step, finished, rng = per-rank list of
{python, numpy, torch, cuda}, sampler = per-rank list of sampler states, settings, history (list of row dicts),
model_info, objective {name, params}, train_seconds = training seconds summed over resumed parts). Resume is
bit-identical in a single process on CPU, and continues the run it resumes: requested settings that differ from
the checkpoint's in anything that shapes training (`RESUME_KEYS`: steps, schedule, lr, ...) are refused with a
one-line `ValueError`. A run whose checkpoint says ``finished`` and whose folder holds ``metrics.json`` is never
retrained: `train` returns its stored history, or raises `ValueError` when the requested settings differ from the
stored ones in anything that shapes the weights.

Command line (single process or under torchrun; only rank 0 writes files)::

    python -m lib.train --config params/objectives/bce.yaml --set steps=10 --set study=cli
    torchrun --nproc_per_node=2 -m lib.train --config params/objectives/bce.yaml --set device=cpu

It does what 02_train does (`train_stage`): trains on the source minus its held-out images (`lib.pair_eval`) and
records the same ``metrics.json`` (`record_metrics`), so 03, 04, the sweep and the summary read a torchrun-trained
run folder like a 02-trained one (02 on it returns the stored history; the checkpoint records ``world_size``, and
evaluation loads rank 0's full model whatever the number of processes that trained it).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from lib import SAME, checkpoints, cli, config, data, objectives, pair_eval, pairs, pretrain, runs
from lib import bank as bank_lib
from lib import model as model_lib
from lib.checkpoints import checkpoint_path, load_trained  # noqa: F401 (load_trained: 02_train calls train.load_trained)
from lib.device import autocast, configure_cpu, resolve_device, to_device
from lib.progress import bar as progress_bar

# settings that shape the trained weights: a stored run must match them to be reused or resumed; the objective's
# parameters (mse_c, focal_gamma, focal_k, hinge_delta) are the settings lib.objectives.REGISTRY names
TRAIN_KEYS = ("dataset", "data_root", "image_size", "source_classes", "pretrained", "pretrain_classes",
              "pretrain_epochs", "pretrain_lr", "pretrain_seed", "small_stem", "d_model", "n_heads",
              "n_blocks", "mlp_ratio", "head", "head_hidden", "loss", *objectives.PARAM_SETTINGS,
              "pairing", "neg_to_pos_ratio", "class_balance", "images_per_class", "batch_pairs", "lr", "warmup_steps",
              "weight_decay", "momentum", "lars", "lars_trust", "seed", "optimizer", "schedule", "grad_clip",
              "train_backbone", "bank_views", "cpu_amp")
# what a resumed run must share with its checkpoint: a resume continues the run it resumes (steps and amp change what
# the remaining steps compute, log_every the history's rows); anything else is a new run, in a new run_dir
RESUME_KEYS = TRAIN_KEYS + ("steps", "amp", "log_every")
TIMING_COLUMNS = ("pairs_per_s", "images_per_s", "seconds")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with `deterministic`, torch's deterministic algorithms (atomics-free CUDA
    kernels, cuBLAS's fixed workspace). The CPU side of determinism (one thread, the pinned float path) is
    `lib.device.configure_cpu`, which `train` calls first."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
    torch.use_deterministic_algorithms(deterministic)


def make_optimizer(net: nn.Module, settings) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay on weight matrices/kernels only), timm's LARS or AdamW with the same groups.

    Only parameters with ``requires_grad`` are optimised (a frozen backbone is left out)."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2 and p is not getattr(net, "label_token", None)]
    ids = {id(p) for p in decay}
    no_decay = [p for p in trainable if id(p) not in ids]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    if settings.lars:
        from timm.optim import Lars  # trust ratio on the decayed group only (biases / norms are not adapted)

        return Lars(groups, lr=settings.lr, momentum=settings.momentum, trust_coeff=settings.lars_trust)
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)


def warmup_factor(warmup_steps: int):
    """LambdaLR factor: linear warmup (step+1)/warmup_steps, then constant 1 (docs/METHOD.md §5: no decay)."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def lr_factor(settings):
    """LambdaLR factor of ``settings.schedule``: constant = `warmup_factor`; cosine = the same warmup, then
    0.5 (1 + cos(pi (step - warmup) / (steps - warmup))), reaching 0 at ``steps``."""
    warmup = warmup_factor(settings.warmup_steps)
    if settings.schedule == "constant":
        return warmup
    start, span = settings.warmup_steps, max(1, settings.steps - settings.warmup_steps)
    return lambda step: warmup(step) if step < start else 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / span)))


class PairStep(nn.Module):
    """images -> one backbone pass -> pairs by indexing; a module so DDP hooks its forward. With `frozen` the
    inputs are already backbone features (the bank's views): no backbone pass."""

    def __init__(self, net: model_lib.ReSeND, frozen: bool = False):
        super().__init__()
        self.net = net
        self.frozen = frozen

    def forward(self, inputs: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feats = inputs if self.frozen else self.net.features(inputs)
        return self.net.relate(feats[a], feats[b])


def step_inputs(batch: pairs.PairBatch, source, transform, device: torch.device, memory_format: torch.memory_format,
                bank_feats: torch.Tensor | None = None, num_workers: int = 0,
                images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs, a, b, target)`` of one sampled pair batch on `device`: the augmented images of the batch (uint8 on
    `device` -> `transform` -> `memory_format`: an in-memory source is augmented on the device as one batch, a
    file-backed one decoded and augmented in `num_workers` DataLoader workers, see `data.augment_batch`; `images`:
    the batch already decoded and augmented, by a `Prefetch`), or with `bank_feats` (K, N, 512) one of the K bank
    views of each image, drawn from the run's torch RNG (saved in the checkpoint); `a`, `b` index the pairs' rows,
    `target` their labels."""
    if bank_feats is not None:
        pick = torch.randint(bank_feats.shape[0], (len(batch.images),))
        inputs = bank_feats[to_device(pick, device), to_device(torch.from_numpy(batch.images), device)]
    else:
        # uint8 to the device, augmented there as one batch (train_transform); parameters from the run's torch RNG
        if images is None:
            images = data.augment_batch(source, batch.images, transform, num_workers, device.type == "cuda", device)
        inputs = images.to(device, non_blocking=True)
        inputs = inputs.contiguous(memory_format=memory_format)
    # every copy non-blocking (lib.device.to_device): preparing a step never waits for the GPU
    a, b = to_device(torch.from_numpy(batch.a), device), to_device(torch.from_numpy(batch.b), device)
    target = to_device(torch.from_numpy(batch.label), device)
    return inputs, a, b, target


def train_step(step_module: nn.Module, objective, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, settings, device: torch.device,
               trainable: list[torch.Tensor], step: int = 0) -> tuple[torch.Tensor, float]:
    """One optimiser step of relational training (what `train` runs each step and benchmarks/train_throughput.py
    times): forward of `step_module` (a `PairStep`, or its DDP wrapper) under autocast (``amp``, ``cpu_amp``), the
    objective's loss in float32, backward, clipping of `trainable` at ``grad_clip`` (0 = off), optimiser step.

    Returns (head output (P, out_dim) float32, loss value). Raises FloatingPointError on a NaN/inf loss, before the
    backward pass (`step` = the 0-based step, for the message).
    """
    with autocast(device, settings.amp, settings.cpu_amp):
        output = step_module(inputs, a, b)
    output = output.float()
    loss = objective.loss(output, target)
    loss_value = loss.item()
    if not np.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value} at step {step + 1} with objective {objective.label()} "
                                 f"(lr {optimizer.param_groups[0]['lr']:.3g}): lower lr or check the inputs")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if settings.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
    optimizer.step()
    return output, loss_value


def check_writable(folder: Path) -> None:
    """Fail now, not after training, when `folder` cannot be created or written (permissions, read-only disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write to {folder} ({error.strerror or error}): choose a writable run_dir "
                              "or fix the folder's permissions") from None


def _settings_mismatch(stored: dict[str, Any], settings, keys) -> dict[str, tuple]:
    current = settings.to_dict()
    # a key the stored run predates took its default then (e.g. optimizer, train_backbone)
    return {k: (stored.get(k, config.DEFAULTS[k]), current[k]) for k in keys
            if stored.get(k, config.DEFAULTS[k]) != current[k]}


def _differences(diff: dict[str, tuple]) -> str:
    """``steps 30 → 40, lr 0.008 → 0.01``: each differing setting, stored → requested."""
    return ", ".join(f"{key} {stored!r} → {requested!r}" for key, (stored, requested) in diff.items())


def _history_seconds(history: list[dict]) -> float:
    """Training seconds of a stored history (checkpoints older than ``train_seconds``): its ``seconds`` column
    restarts at each resume, so the sum of each part's last value."""
    total, last = 0.0, 0.0
    for row in history:
        seconds = float(row.get("seconds", 0.0))
        if seconds < last:
            total += last
        last = seconds
    return total + last


def training_metrics(history: pd.DataFrame) -> dict[str, float]:
    """What a training stage records of its history (one row per logged step: ``loss``, ``acc_same``, ``acc_diff``,
    ``pairs_per_s``): ``train_loss_init`` (the first logged loss: the untrained model when log_every = 1),
    ``train_loss_first`` / ``train_loss_last`` (mean loss of the first / last fifth of the rows, at least one row),
    ``train_acc_same_last`` / ``train_acc_diff_last`` (mean accuracies of the last fifth; the plateau rule's
    ``summary.LEARNED_ACC_SAME`` reads the first) and ``train_pairs_per_s`` (the median throughput)."""
    if history.empty:
        raise ValueError("an empty training history has no metrics")
    fifth = max(1, len(history) // 5)
    return {
        "train_loss_init": history["loss"].iloc[0],
        "train_loss_first": history["loss"].iloc[:fifth].mean(),
        "train_loss_last": history["loss"].iloc[-fifth:].mean(),
        "train_acc_same_last": history["acc_same"].iloc[-fifth:].mean(),
        "train_acc_diff_last": history["acc_diff"].iloc[-fifth:].mean(),
        "train_pairs_per_s": history["pairs_per_s"].median(),
    }


def record_metrics(settings, run_dir: Path | str, history: pd.DataFrame, held_out, seconds: float) -> dict[str, float]:
    """Write and return the training stage's ``metrics.json`` (merged with what is there): `training_metrics` of
    `history`, ``train_steps``, ``train_seconds`` and the held-out pair metrics of the trained run
    (`pair_eval.pair_metrics` on `held_out`, the model loaded from its checkpoint on ``settings.device``).

    ``train_seconds`` is the time of the runs that did the work: the value already recorded (the first run's), else
    ``history.attrs["train_seconds"]`` (what `train` returns: the checkpoint's seconds, summed over a killed run's
    resumed parts), else `seconds`; never the time of a rerun that only returned the stored history."""
    stored_seconds = runs.read_metrics(run_dir).get("train_seconds", history.attrs.get("train_seconds"))
    net, objective, _ = load_trained(run_dir, resolve_device(settings))
    pair = pair_eval.pair_metrics(net, objective, held_out, settings)  # held-out pairs 1 : k, same = positive
    return runs.write_metrics(run_dir, {
        **training_metrics(history), "train_steps": settings.steps,
        "train_seconds": stored_seconds if stored_seconds is not None else seconds,
        "pair_auroc": pair["pair_auroc"], "pair_acc_same": pair["pair_acc_same"], "pair_acc_diff": pair["pair_acc_diff"],
    })


def _write_history(run_dir: Path, history: list[dict]) -> None:
    runs.atomic_write_text(run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))


@dataclass
class Run:
    """One training run as `setup` builds it: what the loop steps (`loop`) and what a checkpoint saves (`save`)."""
    settings: Any
    run_dir: Path
    objective: objectives.Objective
    net: model_lib.ReSeND
    info: dict[str, Any]
    step_module: nn.Module  # PairStep, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: pairs.PairSampler
    transform: Any  # the training augmentation (data.augmentation)
    device: torch.device
    memory_format: torch.memory_format
    bank_feats: torch.Tensor | None  # the frozen regime's bank views (K, N, 512) on the device; None: finetune
    called: float  # perf_counter when `train` was called: the run's seconds count from there
    distributed: bool = False
    rank: int = 0
    world: int = 1
    history: list[dict] = field(default_factory=list)
    start: int = 0  # the first step to run (a resumed run's checkpoint step)
    prior_seconds: float = 0.0  # training seconds of the parts of this run before a resume
    rewind: dict[str, Any] | None = None  # sampler and RNG states before a prefetched step's draws (`Prefetch`)


def train(settings, run_dir: Path | str, source) -> pd.DataFrame:
    """Train ReSeND on `source` (an ImageSet) and return the history (one row per ``log_every`` steps).

    Resumes from ``run_dir/checkpoints/last.pt`` when ``settings.resume``, only with the settings it was trained
    with (`RESUME_KEYS`: a resume continues its run; other steps, schedule, lr... are a new run, refused with a
    ValueError naming the differences); returns the stored history of a finished run (see the module docstring).
    The history's ``attrs["train_seconds"]`` is the run's training time, summed over its resumed parts. Under
    torchrun, ``batch_pairs`` is the global number of pairs per step, split over the ranks. Raises
    FloatingPointError on a NaN/inf loss.
    """
    called = time.perf_counter()
    run_dir = Path(run_dir)
    stored, done = stored_state(settings, run_dir)
    if done is not None:
        return done
    run = setup(settings, run_dir, source, stored, called)
    loop(run, source)
    result = pd.DataFrame(run.history)
    result.attrs["train_seconds"] = save(run, settings.steps, finished=True)
    return result


def stored_state(settings, run_dir: Path) -> tuple[dict[str, Any] | None, pd.DataFrame | None]:
    """(checkpoint to resume or None, stored history when the run is already trained to the end or None), after the
    checks: a finished run (metrics.json) is never retrained nor trained again with other settings, a resume only
    continues its own run."""
    ckpt_file = checkpoint_path(run_dir)
    reuse = ckpt_file.exists() and (settings.resume or runs.is_finished(run_dir))
    stored = checkpoints.load_checkpoint(ckpt_file) if reuse else None
    if runs.is_finished(run_dir):
        if stored is None or not stored.get("finished"):
            raise FileExistsError(f"{run_dir} has metrics.json but no final checkpoint: it is marked finished and will "
                                  "not be overwritten; remove metrics.json (or pick another run_dir) to retrain")
        diff = _settings_mismatch(stored["settings"], settings, TRAIN_KEYS + ("steps",))
        if diff:
            raise ValueError(f"{run_dir} is a finished run trained with other settings ({_differences(diff)}; "
                             "stored → requested): use another study/config_name/run_dir")
        return stored, _stored_history(stored)
    if stored is not None:
        diff = _settings_mismatch(stored["settings"], settings, RESUME_KEYS)
        if diff:
            done = "finished" if stored.get("finished") else "unfinished"
            raise ValueError(f"cannot resume {ckpt_file} ({done}, step {stored['step']} of "
                             f"{stored['settings'].get('steps')}): it was trained with other settings "
                             f"({_differences(diff)}; stored → requested) and a resumed run continues its own run: "
                             "train these settings in a new run_dir, or rerun with the stored ones")
        if stored.get("finished"):
            # trained to the end (by any number of processes: torchrun) but not yet recorded: nothing to resume
            return stored, _stored_history(stored)
    return stored, None


def resolve_backbone(settings, rank: int = 0, distributed: bool = False) -> tuple[Path | None, str]:
    """The backbone weights the run starts from (`pretrain.backbone_weights`), resolved before anything else: a
    source-pretrained backbone is built (once, cached) by rank 0 while the other ranks wait."""
    if settings.pretrained == "source":
        if rank == 0:
            pretrain.source_backbone(settings)
        if distributed:
            dist.barrier()
    return pretrain.backbone_weights(settings)


def setup(settings, run_dir: Path, source, stored: dict[str, Any] | None, called: float) -> Run:
    """Device, backbone weights, model, optimiser, schedule, sampler, a resumed run's states, the frozen regime's
    bank and the run folder's records: everything the loop needs, in the order that fixes the run's random streams."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    objective = objectives.make(settings.loss, **settings.objective_params())
    device = resolve_device(settings)
    configure_cpu(settings, device)  # deterministic on the CPU: one thread, the pinned float path (lib.device)
    weights = resolve_backbone(settings, rank, distributed)
    if rank == 0:
        check_writable(checkpoint_path(run_dir).parent)
    seed_everything(settings.seed, settings.deterministic)
    net, info = model_lib.build(settings, objective.out_dim, weights)
    if rank:  # augmentation randomness differs per rank; the model init above is shared
        seed_everything(settings.seed + 1000 * rank, settings.deterministic)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    net = net.to(device, memory_format=memory_format)
    frozen = not settings.train_backbone
    if frozen:  # r and c train on the bank; the backbone keeps its (pretrained) weights and BN statistics
        net.backbone.requires_grad_(False)
    optimizer = make_optimizer(net, settings)
    run = Run(settings, run_dir, objective, net, info, PairStep(net, frozen), optimizer,
              torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings)),
              pairs.from_settings(settings, source.labels, rank=rank), data.augmentation(source, settings.image_size),
              device, memory_format, None, called, distributed, rank, world)
    if stored is not None:
        restore(run, stored)
    if frozen:  # rank 0 builds (or loads) the cached bank; the others wait for it, then load it
        if distributed and rank:
            dist.barrier()
        bank = bank_lib.feature_bank(net.backbone, source, settings, device, verbose=rank == 0)
        run.bank_feats = bank.train.to(device)
        if distributed and not rank:
            dist.barrier()
    regime = f"frozen backbone, feature bank of {settings.bank_views} views" if frozen else "finetune"
    if rank == 0:  # the checks passed: only now does the run folder get its records
        runs.write_params(run_dir, settings, "train")
        runs.update_env(run_dir, {"pretrained": info["pretrained"], "model_parameters": info["parameters"],
                                  "train_device": str(device), "world_size": world, "train_regime": regime,
                                  "source_skipped_images": len(getattr(source, "skipped", []))})
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        run.step_module = nn.parallel.DistributedDataParallel(run.step_module, device_ids=ids)
    return run


def restore(run: Run, stored: dict[str, Any]) -> None:
    """Continue `stored` (a checkpoint of this run): weights, optimiser, schedule, this rank's sampler and RNG states,
    the history so far."""
    run.net.load_state_dict(stored["model"])
    run.optimizer.load_state_dict(stored["optimizer"])
    run.scheduler.load_state_dict(stored["scheduler"])
    if len(stored["sampler"]) != run.world:
        raise ValueError(f"{checkpoint_path(run.run_dir)} was written by {len(stored['sampler'])} process(es): "
                         "resume with as many")
    run.sampler.load_state_dict(stored["sampler"][run.rank])
    rng = stored["rng"][run.rank]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if run.device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], run.device)
    run.history, run.start = list(stored["history"]), int(stored["step"])
    run.prior_seconds = _stored_seconds(stored)


def states(run: Run) -> dict[str, Any]:
    """This rank's sampler and RNG states, as a checkpoint saves them."""
    cuda = run.device.type == "cuda"
    return {"sampler": run.sampler.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(run.device) if cuda else None}}


def save(run: Run, step: int, finished: bool) -> float:
    """Save the checkpoint of `step` (rank 0 writes; every rank calls it: the ranks' sampler and RNG states are
    gathered); return the run's training seconds so far."""
    seconds = run.prior_seconds + time.perf_counter() - run.called
    # a prefetched next step has drawn from the streams already: save them as they were before (a resume redraws it)
    mine = run.rewind or states(run)
    per_rank = [mine]
    if run.distributed:
        per_rank = [None] * run.world
        dist.all_gather_object(per_rank, mine)
    if run.rank != 0:
        return seconds
    _write_history(run.run_dir, run.history)  # first: a checkpoint that cannot be written must not take the history
    state = {
        "model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "step": step, "finished": finished,
        "sampler": [r["sampler"] for r in per_rank], "rng": [r["rng"] for r in per_rank],
        "settings": run.settings.to_dict(), "history": run.history, "model_info": run.info, "world_size": run.world,
        "objective": {"name": run.objective.name, "params": run.objective.params},
        "train_seconds": seconds,
    }
    checkpoints.save_checkpoint(checkpoint_path(run.run_dir), state)
    return seconds


def loop(run: Run, source) -> None:
    """Steps ``run.start`` .. ``steps``: sample pairs -> inputs on the device -> `train_step` -> schedule; a history
    row every ``log_every`` steps, a checkpoint every ``checkpoint_every``."""
    settings = run.settings
    n_anchors = pairs.anchors_per_step(settings.batch_pairs // run.world, settings.neg_to_pos_ratio)
    run.net.train()
    if run.bank_feats is not None:
        run.net.backbone.eval()  # never run, but kept in eval mode so no BN statistic could move
    trainable = [p for p in run.net.parameters() if p.requires_grad]
    began = time.perf_counter()
    progress = progress_bar(total=settings.steps, initial=run.start, disable=run.rank != 0,
                            desc=f"train {run.objective.label()}")
    ahead = Prefetch(run, source, n_anchors) if Prefetch.applies(run, source) else None
    try:
        for step in range(run.start, settings.steps):
            tic = time.perf_counter()
            batch, images = ahead.take(step) if ahead else (run.sampler.sample(n_anchors), None)
            inputs, a, b, target = step_inputs(batch, source, run.transform, run.device, run.memory_format,
                                               run.bank_feats, settings.num_workers, images)
            try:
                output, loss_value = train_step(run.step_module, run.objective, run.optimizer, inputs, a, b, target,
                                                settings, run.device, trainable, step)
            except FloatingPointError:
                if run.rank == 0 and run.history:
                    _write_history(run.run_dir, run.history)
                raise
            lr = run.scheduler.get_last_lr()[0]
            run.scheduler.step()
            if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
                run.history.append(history_row(run, step, batch, output, target, loss_value, lr, tic, began))
                last = run.history[-1]
                progress.set_postfix(loss=f"{last['loss']:.4f}", same=f"{last['acc_same']:.2f}",
                                     diff=f"{last['acc_diff']:.2f}", refresh=False)
            progress.update(1)
            if settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0 and step + 1 < settings.steps:
                save(run, step + 1, finished=False)
    finally:
        progress.close()
        if ahead is not None:
            ahead.close()


class Prefetch:
    """A file-backed source's step t+1 decoded while step t trains: its pairs are sampled and its images' seeds drawn
    here, in the main process, in the streams' order (a training step draws nothing from them: dropout is 0, the
    augmentation runs in the workers from those seeds), then its images decoded and augmented by the DataLoader
    workers, pinned, from a background thread while the device runs step t. The run's numbers are those of a run
    without it, bit for bit. A checkpoint saves the states from before step t+1's draws (``run.rewind``), so a
    resume draws that step again."""

    def __init__(self, run: Run, source, n_anchors: int):
        from concurrent.futures import ThreadPoolExecutor

        self.run, self.source, self.n_anchors = run, source, n_anchors
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self.pending = None  # (step, batch, future of its images)

    @staticmethod
    def applies(run: Run, source) -> bool:
        """Only for file-backed sets decoded in DataLoader workers (other processes: the decoding thread touches no
        RNG of this one) when training runs the backbone (the frozen regime reads the bank)."""
        return (isinstance(source, data.FileImageSet) and run.settings.num_workers > 0 and run.bank_feats is None)

    def _submit(self, step: int) -> None:
        batch = self.run.sampler.sample(self.n_anchors)
        items = self.source.draw(batch.images, self.run.transform)
        pin = self.run.device.type == "cuda"
        self.pending = (step, batch, self.pool.submit(self.source.decode_items, items, self.run.transform,
                                                      self.run.settings.num_workers, pin))

    def take(self, step: int) -> tuple[pairs.PairBatch, torch.Tensor]:
        """Step `step`'s batch and its images (CPU, pinned on CUDA); submits step + 1's before returning."""
        if self.pending is None or self.pending[0] != step:
            self._submit(step)
        _, batch, future = self.pending
        images = future.result()
        self.run.rewind = None
        if step + 1 < self.run.settings.steps:
            self.run.rewind = states(self.run)
            self._submit(step + 1)
        return batch, images

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.run.rewind = None


def history_row(run: Run, step: int, batch: pairs.PairBatch, output: torch.Tensor, target: torch.Tensor,
                loss_value: float, lr: float, tic: float, began: float) -> dict[str, float]:
    """The history row of `step`: loss and the objective's same/different accuracies (summed over the ranks), lr,
    throughput of this step and seconds since the loop began."""
    with torch.no_grad():
        same = target == SAME
        said_same = run.objective.predicts_same(output)
        stats = torch.tensor([loss_value, (said_same & same).sum().item(), same.sum().item(),
                              (~said_same & ~same).sum().item(), (~same).sum().item()], dtype=torch.float64)
    if run.distributed:
        stats = stats.to(run.device)
        dist.all_reduce(stats)
        stats = stats.cpu()
        stats[0] /= run.world
    seconds = time.perf_counter() - tic
    return {"step": step + 1, "loss": float(stats[0]), "acc_same": float(stats[1] / max(stats[2], 1)),
            "acc_diff": float(stats[3] / max(stats[4], 1)), "lr": lr,
            "pairs_per_s": batch.num_pairs * run.world / seconds,
            "images_per_s": len(batch.images) * run.world / seconds,
            "seconds": time.perf_counter() - began}


def _stored_seconds(stored: dict[str, Any]) -> float:
    """Training seconds a checkpoint records (older ones: from their history's ``seconds``)."""
    return float(stored.get("train_seconds", _history_seconds(stored["history"])))


def _stored_history(stored: dict[str, Any]) -> pd.DataFrame:
    """The history of a checkpoint trained to the end, with its training seconds in ``attrs``."""
    history = pd.DataFrame(stored["history"])
    history.attrs["train_seconds"] = _stored_seconds(stored)
    return history


def train_stage(settings) -> tuple[Path, pd.DataFrame, dict[str, float] | None]:
    """What 02_train and the command line run: train on the source minus its held-out images
    (`pair_eval.split_source`), then, on rank 0, `record_metrics`. Returns (run folder, history, metrics; None on the
    other ranks). Under torchrun every rank calls it; the others wait at a barrier while rank 0 records."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    run_dir = settings.resolved_run_dir()
    source, held_out = pair_eval.split_source(data.load_source(settings))  # held-out images: never trained on
    started = time.perf_counter()
    history = train(settings, run_dir, source)
    seconds = time.perf_counter() - started
    metrics = record_metrics(settings, run_dir, history, held_out, seconds) if rank == 0 else None
    if distributed:
        dist.barrier()
    return run_dir, history, metrics


def main(argv=None) -> None:
    settings = config.settings_from_cli(argv)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        cuda = resolve_device(settings).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        run_dir, history, metrics = train_stage(settings)
        if metrics is not None:
            print(f"{run_dir}: {int(metrics['train_steps'])} steps on {world} process(es), loss "
                  f"{metrics['train_loss_last']:.4f}, held-out pair AUROC {metrics['pair_auroc']:.3f}")
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(cli.run(main, prog="lib.train"))
