"""Recipe search for the frozen-backbone regime (issue 15): one shared recipe that trains every configuration.

On the mini preset's frozen source-pretrained backbone and its cached feature bank (``train_backbone: false``,
``lib.bank``), every ICIAP configuration plus ``resend_eccv`` (the files in ``params/objectives/``) is trained
with the REAL training function (`lib.train.train`, a temporary run folder per trial) under each candidate
recipe, then scored on the held-out source pairs (`lib.pair_eval`, the number 02_train records). Reported per
configuration x recipe: held-out ``pair_auroc`` and ``train_acc_same_last`` (mean of the last fifth of the
steps, as 02_train records it), seed 0; the chosen recipe is re-run with seed 1.

Choice rule, fixed before looking at any novelty-detection number: the cheapest recipe (fewest pairs trained,
steps x batch_pairs; ties: the higher worst-configuration AUROC) under which EVERY configuration reaches held-out pair AUROC >= 0.95 on seed 0; nothing
here looks at the benchmarks, R² or the R²-AUROC finding. Shared recipe parts: batch 336 pairs (16 anchors x 21),
linear warmup over the first 5 % of the steps, then cosine to 0, gradient-norm clip 1, weight decay = the
preset's (it is also part of the source-pretraining recipe, see `lib.pretrain.recipe`, so changing it would
change the backbone). The model gets the reference init of docs/METHOD.md §2 (trunc-normal .02, zero bias, LN 1/0), which
`lib.model` builds (the first rows were searched with the same init patched in, before lib.model had it).

Raw rows go to ``docs/recipe_search.csv`` (a rerun skips the trials already there); the table to
``docs/recipe_search.md``. Run from the repo root, one thread::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipe_search.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipe_search.py --recipes adamw_3e-4_400 --configs bce,ce
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from lib import bank, checkpoints, config, data, pair_eval, pretrain, train
from lib import model as model_lib
from lib.features import IMAGE_BATCH, extract_features
from lib.paths import PARAMS_DIR, REPO_ROOT

DOCS = REPO_ROOT / "docs"
CONFIGS = ("mse_c1", "mse_c10", "mse_c50", "bce", "bce_focal", "ce", "ce_focal", "hinge_d1", "hinge_d0.1",
           "hinge_d0.01", "resend_eccv")
SHARED = dict(train_backbone=False, bank_views=4, batch_pairs=336, schedule="cosine", grad_clip=1.0)


def _recipe(optimizer: str, lr: float, steps: int, pairing: str = "in_batch") -> dict:
    return dict(optimizer=optimizer, lr=lr, steps=steps, warmup_steps=max(1, round(0.05 * steps)), pairing=pairing,
                **SHARED)


RECIPES = {
    "adamw_3e-5_400": _recipe("adamw", 3e-5, 400),
    "adamw_1e-4_400": _recipe("adamw", 1e-4, 400),
    "adamw_3e-4_400": _recipe("adamw", 3e-4, 400),
    "adamw_3e-5_800": _recipe("adamw", 3e-5, 800),
    "adamw_1e-4_800": _recipe("adamw", 1e-4, 800),
    "adamw_3e-4_800": _recipe("adamw", 3e-4, 800),
    "sgd_5e-3_800": _recipe("sgd", 5e-3, 800),  # control: docs/METHOD.md §5's optimiser at a non-saturating lr
    # added after the grid above (see NOTES): 1e-4 x 800 leaves mse c=1 short, 3e-4 x 800 saturates mse c=50
    "adamw_2e-4_800": _recipe("adamw", 2e-4, 800),
    # per_pair on the bank: the reference's pair statistics (16 anchors, each negative from any other class) at no
    # extra cost, since no backbone runs; in_batch draws a step's 16 anchors and their negatives from 4 classes
    "adamw_1e-4_800_pp": _recipe("adamw", 1e-4, 800, "per_pair"),
    "adamw_3e-4_800_pp": _recipe("adamw", 3e-4, 800, "per_pair"),
    "adamw_2e-4_800_pp": _recipe("adamw", 2e-4, 800, "per_pair"),
    "sgd_5e-3_800_pp": _recipe("sgd", 5e-3, 800, "per_pair"),
    # added for the demo's 20-minute budget (33 runs): half the steps, at the chosen lr and at twice it
    "sgd_5e-3_400_pp": _recipe("sgd", 5e-3, 400, "per_pair"),
    "sgd_1e-2_400_pp": _recipe("sgd", 1e-2, 400, "per_pair"),
    # 400 steps left mse c=1 and c=50 on the plateau: the chosen recipe with the relational module in bf16 on the
    # CPU (cpu_amp; ~1.4x faster steps on avx512_bf16 CPUs), which the demo's budget needs
    "sgd_5e-3_800_pp_bf16": {**_recipe("sgd", 5e-3, 800, "per_pair"), "cpu_amp": True},
}
THRESHOLD = 0.95
NOTES = """How the grid grew (in this order): the issue's grid with `pairing: in_batch` found no recipe for all
configurations: AdamW 1e-4 x 800 left mse c=1 (0.87) and hinge d=.01 (0.92) short, 3e-4 x 800 saturated mse c=50
(0.60) and the hinges, 3e-4 x 400 left mse c=1 at 0.64, and the added 2e-4 x 800 did both (mse c=1 0.84, c=50 0.76).
in_batch draws a step's 16 anchors and all their negatives from 4 classes (images_per_class = 4); on the bank it
saves nothing, since no backbone runs, so `per_pair` (docs/METHOD.md §3's reference statistics: each negative from any other
class) was tried: at 1e-4 x 800 it lifted mse c=50 to 0.996 and hinge d=.01 to 0.991 (mse c=1 0.92), at 3e-4 it
failed hinge d=1 (0.83), and at 2e-4 every configuration passed (hinge d=1 at 0.960 is the closest). Not run, to
spare the 2 shared cores: AdamW 3e-5 x 400/800 and 1e-4 x 400 (less lr x steps than 1e-4 x 800, which already
failed mse c=1), the rest of the failed in_batch columns, and SGD 5e-3 with in_batch (the SGD control ran with
per_pair instead). Single seeds are noisy here: the in_batch results move non-monotonically with lr.
The SGD control with per_pair then passed every configuration too, at the same cost and with a higher worst-config
AUROC (0.985 vs 0.960), so the tie rule (fixed before it ran) chose it; both passed on seed 1 (tables below).
Train acc same (decision x > 0) stays near 0 for some configurations whose held-out pair AUROC is >= 0.98 (the
hinges; bce_focal and mse c=1 under SGD): at 1 same : 20 different their threshold sits below 0, so a plateau rule
on train acc same (`summary.learned`, >= 0.05) would misjudge them; held-out pair AUROC does not.
Then, for the 20-minute demo (33 runs): halving the steps failed (SGD 5e-3 x 400: mse c=1 0.74, c=50 0.62; SGD
1e-2 x 400: 0.55 / 0.65), so the steps stay at 800 and the relational module runs in bf16 on the CPU instead
(`cpu_amp`, the same autocast the CUDA path uses; 29 s instead of 37 s a run): every configuration passed again
(worst hinge d=.1, 0.982), and the choice rule (bf16 before fp32 at equal pairs) takes it. These last three
recipes ran after the merge of the reference init into lib.model (the same init, no longer patched in) and of the
100-character glyph plan, whose source pool differs slightly from the one the earlier rows used."""


def settings_of(config_name: str, recipe: str, seed: int, run_dir: Path):
    """mini + the configuration's file, then the recipe set explicitly (an override equal to a smoke default,
    e.g. optimizer=sgd, must apply even when the preset says otherwise)."""
    values = config.load_yaml(PARAMS_DIR / "objectives" / f"{config_name}.yaml")
    settings = dataclasses.replace(config.resolve("mini", **values), **RECIPES[recipe], seed=seed, device="cpu",
                                   config_name=config_name, run_dir=str(run_dir))
    config.validate(settings)
    return settings


def trial(config_name: str, recipe: str, seed: int, source, held_out, held_feats) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_of(config_name, recipe, seed, Path(tmp) / "run")
        tic = time.perf_counter()
        history = train.train(settings, settings.resolved_run_dir(), source)
        seconds = time.perf_counter() - tic
        net, objective, _ = checkpoints.load_trained(settings.resolved_run_dir())
        pair = pair_eval.pair_metrics(net, objective, held_out, settings, features=held_feats)
    fifth = max(1, len(history) // 5)
    return {"config": config_name, "recipe": recipe, "seed": seed, "pair_auroc": pair["pair_auroc"],
            "pair_acc_same": pair["pair_acc_same"], "pair_acc_diff": pair["pair_acc_diff"],
            "train_acc_same_last": float(history["acc_same"].iloc[-fifth:].mean()),
            "train_loss_last": float(history["loss"].iloc[-fifth:].mean()),
            "steps": settings.steps, "pairs": settings.steps * settings.batch_pairs, "seconds": seconds}


def choose(rows: pd.DataFrame) -> str | None:
    """The recipe with the fewest trained pairs (then bf16 before fp32 on the CPU, a 1.4x cheaper step at equal
    pairs, then the highest worst-configuration AUROC) whose seed-0 pair AUROC is >= THRESHOLD for every
    configuration; None when no recipe qualifies."""
    seed0 = rows[rows["seed"] == 0]
    full = seed0.groupby("recipe")["config"].nunique() == len(CONFIGS)
    worst = seed0.groupby("recipe")["pair_auroc"].min()
    ok = [r for r in worst.index if full.get(r, False) and worst[r] >= THRESHOLD]
    pairs_trained = seed0.groupby("recipe")["pairs"].first()
    return min(ok, key=lambda r: (pairs_trained[r], not RECIPES[r].get("cpu_amp", False), -worst[r])) if ok else None


def table(rows: pd.DataFrame, seed: int, recipes) -> str:
    sub = rows[rows["seed"] == seed]
    recipes = [r for r in recipes if r in set(sub["recipe"])]
    head = "| config | " + " | ".join(recipes) + " |\n|---|" + "---|" * len(recipes) + "\n"
    lines = []
    for c in CONFIGS:
        cells = []
        for r in recipes:
            hit = sub[(sub["config"] == c) & (sub["recipe"] == r)]
            cells.append(f"{hit['pair_auroc'].iloc[0]:.3f} / {hit['train_acc_same_last'].iloc[0]:.2f}" if len(hit) else "–")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    worst = [f"**{sub[sub['recipe'] == r]['pair_auroc'].min():.3f}**" for r in recipes]
    secs = [f"{sub[sub['recipe'] == r]['seconds'].median():.0f}" for r in recipes]
    lines += ["| min pair AUROC | " + " | ".join(worst) + " |", "| s / run (median) | " + " | ".join(secs) + " |"]
    return head + "\n".join(lines) + "\n"


def write_doc(rows: pd.DataFrame, chosen: str | None, init: str, bank_seconds: float) -> str:
    recipes = [r for r in RECIPES if r in set(rows["recipe"])]
    text = ["# Recipe search: one shared recipe for the frozen-backbone regime (mini preset)", "",
            "Made by `benchmarks/recipe_search.py` (its docstring gives the protocol); raw rows in "
            "`docs/recipe_search.csv`. Mini preset (glyph, 32 px, 300 source classes, d=128, 2 blocks), **frozen "
            "source-pretrained backbone, feature bank of 4 train-augmented views per image** (`train_backbone: false`), "
            f"model init: {init}. Every trial runs `lib.train.train` on one CPU thread. Held-out pair AUROC: "
            "`lib.pair_eval` (a fixed ~10 % of each source class, 2 images of 13, never trained on; pairs 1 : 20; "
            "same = positive). Shared: batch 336 pairs, warmup 5 % of the steps then cosine to 0, gradient-norm clip 1, "
            "weight decay 5e-4 (AdamW: decoupled).", "",
            f"Choice rule (fixed in advance): the cheapest recipe under which every configuration reaches held-out "
            f"pair AUROC >= {THRESHOLD} on seed 0. Nothing here looks at a benchmark, R² or the R²–AUROC finding.", "",
            "Cost: a trial is one mini run's training (`train.train`, 800 steps: ~37 s on one thread, the other core "
            "busy); the bank (4 + 1 views of the 3,300 training images) is built once per recipe, 34 s on one thread"
            + (f" ({bank_seconds:.0f} s in this session)" if bank_seconds else "") + ".", "",
            "Cells: held-out pair AUROC / train acc same (last fifth of the steps), seed 0; `–` = not run (a recipe was "
            "left unfinished once a configuration had failed it). Recipe names: optimiser_lr_steps, `_pp` = "
            "`pairing: per_pair`.", "", NOTES, "",
            "## Seed 0, pairing in_batch", "", table(rows, 0, [r for r in recipes if "_pp" not in r]),
            "## Seed 0, pairing per_pair", "", table(rows, 0, [r for r in recipes if "_pp" in r])]
    if chosen:
        text += [f"**Chosen: `{chosen}`** ({RECIPES[chosen]['optimizer']}, lr {RECIPES[chosen]['lr']:g}, "
                 f"{RECIPES[chosen]['steps']} steps x 336 pairs), now in `params/presets/mini.yaml`.", ""]
        seed1 = [r for r in recipes if ((rows["seed"] == 1) & (rows["recipe"] == r)).any()]
        if seed1:
            text += ["## Seed 1 (the chosen recipe and the runner-up)", "", table(rows, 1, seed1)]
    else:
        text += ["**No recipe reached the threshold for every configuration.**", ""]
    return "\n".join(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma list of recipe names")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma list of params/objectives names")
    parser.add_argument("--no-second-seed", action="store_true", help="skip seed 1 of the chosen recipe")
    parser.add_argument("--csv", default=str(DOCS / "recipe_search.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    init = "docs/METHOD.md §2 reference init (trunc-normal .02, zero bias), as lib.model builds it"
    csv = Path(args.csv)
    rows = pd.read_csv(csv) if csv.exists() else pd.DataFrame()

    base = dataclasses.replace(config.resolve("mini"), **SHARED, device="cpu")
    source, held_out = pair_eval.split_source(data.load_source(base))
    train.seed_everything(0)
    net, _ = model_lib.build(base, 1, pretrain.backbone_weights(base))  # the frozen backbone: held-out features once, as 02_train extracts them
    held_feats = extract_features(net, held_out, base.image_size, IMAGE_BATCH, torch.device("cpu"))
    tic = time.perf_counter()
    cached = bank.bank_path(bank.recipe(net.backbone, source, base)).exists()
    bank.feature_bank(net.backbone, source, base, verbose=True)
    bank_seconds = 0.0 if cached else time.perf_counter() - tic
    print(f"source {len(source)} images, held out {len(held_out)}; bank {'cached' if cached else f'built in {bank_seconds:.0f} s'}")

    def run(config_name, recipe, seed):
        nonlocal rows
        done = (not rows.empty) and ((rows["config"] == config_name) & (rows["recipe"] == recipe) & (rows["seed"] == seed)).any()
        if done:
            return
        row = trial(config_name, recipe, seed, source, held_out, held_feats)
        print(f"{recipe:16s} {config_name:12s} seed {seed}: pair AUROC {row['pair_auroc']:.3f}, train acc same "
              f"{row['train_acc_same_last']:.2f}, {row['seconds']:.1f} s", flush=True)
        rows = pd.concat([rows, pd.DataFrame([row])], ignore_index=True)
        rows.to_csv(csv, index=False)

    for recipe in args.recipes.split(","):
        for config_name in args.configs.split(","):
            run(config_name, recipe, 0)
    chosen = choose(rows)
    if chosen and not args.no_second_seed:
        for config_name in CONFIGS:
            run(config_name, chosen, 1)
    doc = write_doc(rows, chosen, init, bank_seconds)
    (DOCS / "recipe_search.md").write_text(doc)
    print(doc)


if __name__ == "__main__":
    main()
