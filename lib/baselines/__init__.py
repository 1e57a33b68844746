"""Comparison methods (docs/METHOD.md §10): trained or fitted on the benchmark's support set, which ReSeND never is.

`METHODS` maps a name to its runner ``runner(benchmark, settings, outliers, budget_s, classifier) -> dict``
returning ``{"normality", "predictions", "train_seconds", "epochs", "steps", "aux_data", "criterion",
"criterion_value", "criterion_met", ...}``; `run_method` adds the metrics of `lib.metrics.novelty_metrics`
(normality: higher = known) and the method's family. The six post-hoc detectors share one support-set CE
classifier, which MixOE fine-tunes in the converged setting: `run_methods` trains it once. The ``backbone_*`` rows
are what every support-trained method starts from: the source-pretrained backbone, no training on the support set,
scored by `posthoc.BACKBONE_SCORES` (KNN k = 1 on normalised features, Mahalanobis).

Budget (docs/METHOD.md §10): every result records ``spent_seconds``, everything the method spent on the benchmark
(building and training its network, its own inference passes, its scoring; a detector sharing a classifier is
charged the classifier and the shared inference as if it ran alone); in the budget-matched setting training stops
so that this stays inside ``budget_s`` (`classifier.Budget`).

Statistics: `run_seeds` runs the methods over seeds in the converged setting (``budget_s = 0``) and the
budget-matched one; `mean_std` reports mean ± sample std (ddof 1, the convention of every table of the project)
over the seeds per method and setting; `resend_results` gives the ReSeND rows to put beside them (the published
method, fixed in advance, and the study's best as a row labelled as chosen after seeing the study).
`write_results` saves every run's per-image normality beside its table (``normality.npz``), from which
`recompute_auroc` rebuilds the table's AUROCs; `readable_table` is the table as read: a row whose training criterion
was not met on every seed reads "did not train".
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from lib import data, runs, supervised
from lib.baselines import classifier as clf
from lib.baselines import mixoe, posthoc, reweightood, ssod
from lib.config import Settings
from lib.datasets.real import ORIGIN_LABELS
from lib.metrics import novelty_metrics
from lib.progress import bar as progress_bar
from lib.progress import each

NO_AUX = "none (support set only)"  # aux_data of a method that saw nothing besides the support set (and its weights)
# The ReSeND row: the published method (ReSeND's ECCV objective), the a-priori choice; the study's best configuration
# on test AUROC is a separate row, labelled as chosen after seeing the study.
FIXED_RESEND_CONFIG = "resend_eccv"
CONVERGED = "converged"  # the setting trained to each recipe's end (budget_s = 0); "budget" = ReSeND's eval seconds
BACKBONE_FAMILY = "backbone, no support training"  # the rows of what the support-trained methods start from


def _trained(benchmark, settings: Settings, make_loss, budget: clf.Budget, recipe: supervised.Recipe,
             reserve_sets, image_size: int | None = None):
    """A fresh classifier trained by `make_loss` under `recipe`, stopping (with a budget) before the inference of
    `reserve_sets` at `image_size` would no longer fit."""
    model, note = clf.build_classifier(benchmark.num_known, settings)
    reserve = clf.inference_seconds(model, reserve_sets, settings, image_size) if budget else 0.0
    (deadline,) = budget.stages(reserve)
    info = supervised.train_classifier(model, make_loss, benchmark.support, settings, recipe=recipe, deadline=deadline)
    return model, {**info, "weights": note, **recipe.record(settings), "aux_data": NO_AUX}


def _fine_tuned(base_info: dict, info: dict, base: str) -> dict:
    """The training record of a method that fine-tunes a CE base classifier (MixOE, SSOD): its own `info`, with the
    seconds of both stages, the base's seconds and epochs, and what the base was (`base`) and started from."""
    return {**info, "train_seconds": base_info["train_seconds"] + info["train_seconds"],
            "base_train_seconds": base_info["train_seconds"], "base_epochs": base_info["epochs"],
            "weights": f"{base} ({base_info['weights']})"}


def _posthoc_runner(name: str) -> Callable:
    def run(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
        model, info = classifier or clf.train_support_classifier(benchmark, settings, budget_s)
        if clf.untrained(info["budget_s"], info):
            return {**info, "aux_data": NO_AUX, "score_seconds": 0.0, **clf.not_run(benchmark, info["spent_seconds"])}
        cache = model.__dict__.setdefault("posthoc_outputs", {})  # one inference pass shared by the six detectors
        key = (benchmark.name, id(benchmark.test), settings.image_size)
        if key not in cache:
            start = clf.now()
            cache[key] = (supervised.infer(model, benchmark.support, settings),
                          supervised.infer(model, benchmark.test, settings), clf.now() - start)
        support_out, test_out, infer_seconds = cache[key]
        start = clf.now()
        normality = posthoc.posthoc_normality(name, model, support_out, test_out, benchmark.test,
                                              benchmark.support.labels, settings)
        score_seconds = clf.now() - start
        # charged as if it ran alone: its classifier, the inference it shares, its own scoring
        return {**info, "aux_data": NO_AUX, "normality": normality, "predictions": test_out["logits"].argmax(1).numpy(),
                "score_seconds": score_seconds, "spent_seconds": info["spent_seconds"] + infer_seconds + score_seconds}

    return run


def describe_outliers(benchmark, outliers) -> str:
    """aux_data of MixOE: the outliers' family and size, e.g. ``emoji outliers: 4000 images of 71 classes``."""
    family = data.outlier_family(benchmark.name) if benchmark.name in data.BENCHMARKS else "given"
    return f"{family} outliers: {len(outliers)} images of {len(np.unique(outliers.labels))} classes"


def _run_mixoe(variant: str) -> Callable:
    def run(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
        if outliers is None or len(outliers) == 0:
            raise ValueError(f"mixoe_{variant} needs auxiliary outliers: pass data.outlier_pool(benchmark, settings)")
        recipe = mixoe.recipe(epochs=settings.mixoe_epochs)
        budget, shared = clf.Budget(budget_s), classifier is not None and budget_s <= 0
        if budget:  # budget-matched: its own CE base and MixOE share the budget (clf.stage_shares)
            base, note = clf.build_classifier(benchmark.num_known, settings)
            reserve = clf.inference_seconds(base, [benchmark.test], settings)
            first, second = budget.stages(reserve, clf.stage_shares(settings.baseline_epochs, recipe.epochs))
            base_info = {**supervised.train_classifier(base, supervised.cross_entropy_loss, benchmark.support, settings,
                                                       recipe=supervised.support_recipe(settings), deadline=first),
                         "weights": note}
        else:
            base, base_info = classifier if shared else clf.train_support_classifier(benchmark, settings)
            second = None
        model = copy.deepcopy(base)
        model.__dict__.pop("posthoc_outputs", None)
        info = supervised.train_classifier(model, mixoe.mixoe_loss(variant, outliers), benchmark.support, settings,
                                           recipe=recipe, deadline=second)
        record = {**_fine_tuned(base_info, info, "support CE classifier"), **recipe.record(settings),
                  "aux_data": describe_outliers(benchmark, outliers), "budget_s": budget.seconds}
        if clf.untrained(budget, info):
            return {**record, **clf.not_run(benchmark, budget.spent())}
        out = supervised.infer(model, benchmark.test, settings)
        normality = out["logits"].double().softmax(dim=1).max(dim=1).values.numpy()
        # its whole clock, plus the shared base's seconds where it reused the shared one (alone, it would train it)
        spent = budget.spent() + (base_info["spent_seconds"] if shared else 0.0)
        support_logits = supervised.infer(model, benchmark.support, settings)["logits"]  # the criterion: a check
        return {**record, **clf.criterion_record(supervised.accuracy(support_logits, benchmark.support.labels)),
                "normality": normality, "predictions": out["logits"].argmax(1).numpy(), "spent_seconds": spent}

    return run


def _run_ssod(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
    """SSOD fine-tunes a CE classifier trained at its own input size (lib.baselines.ssod: from a fresh fc its
    self-labelled patches are all OOD and it does not train); budget-matched, the two stages share the budget
    (`classifier.stage_shares`)."""
    base_recipe, recipe = ssod.base_recipe(settings), ssod.recipe(settings)
    size = recipe.size(settings)
    budget = clf.Budget(budget_s)
    model, note = clf.build_classifier(benchmark.num_known, settings)
    reserve = clf.inference_seconds(model, [benchmark.test], settings, size) if budget else 0.0
    first, second = budget.stages(reserve, clf.stage_shares(base_recipe.epochs, recipe.epochs))
    base_info = {**supervised.train_classifier(model, supervised.cross_entropy_loss, benchmark.support, settings,
                                               recipe=base_recipe, deadline=first), "weights": note}
    info = supervised.train_classifier(model, ssod.ssod_loss(), benchmark.support, settings, recipe=recipe,
                                       deadline=second)
    record = {**_fine_tuned(base_info, info, f"support CE classifier at {size} px"), **recipe.record(settings),
              "aux_data": NO_AUX, "budget_s": budget.seconds}
    if clf.untrained(budget, info):
        return {**record, **clf.not_run(benchmark, budget.spent())}
    out = supervised.infer(model, benchmark.test, settings, outputs=ssod.ood_head_outputs, image_size=size)
    normality = ssod.ssod_score(out["logits"], out["ood_logits"])
    spent = budget.spent()
    support_logits = supervised.infer(model, benchmark.support, settings, image_size=size)["logits"]
    return {**record, **clf.criterion_record(supervised.accuracy(support_logits, benchmark.support.labels)),
            "normality": normality, "predictions": out["logits"].argmax(1).numpy(), "spent_seconds": spent}


def train_reweightood(benchmark, settings: Settings, budget_s: float = 0.0) -> dict:
    """ReweightOOD trained on the support set (with a budget: stopping before the inference of support + test would
    no longer fit) and its float32 features: ``{"info", "support", "test", "spent_seconds"}``, shared by its two
    scores (`run_methods`)."""
    budget = clf.Budget(budget_s)
    model, info = _trained(benchmark, settings, reweightood.reweightood_loss(), budget, reweightood.recipe(settings),
                           [benchmark.support, benchmark.test])
    if clf.untrained(budget, info):
        return {"info": {**info, "budget_s": budget.seconds}, "untrained": True, "spent_seconds": budget.spent()}
    support = supervised.infer(model, benchmark.support, settings)["features"]
    test = supervised.infer(model, benchmark.test, settings)["features"]
    return {"info": {**info, "budget_s": budget.seconds}, "support": support, "test": test,
            "spent_seconds": budget.spent()}


def _reweightood_runner(score: Callable) -> Callable:
    """ReweightOOD scored by `score(support_features, labels, test_features) -> (normality, predictions)`: the
    official Mahalanobis on normalised features, or CIDER's KNN (the extra row); ``classifier`` = a shared
    `train_reweightood` result (each score is charged its training and inference as if it ran alone)."""

    def run(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
        trained = classifier or train_reweightood(benchmark, settings, budget_s)
        if trained.get("untrained"):
            return {**trained["info"], **clf.not_run(benchmark, trained["spent_seconds"], "support_1nn_accuracy")}
        start = clf.now()
        normality, predictions = score(trained["support"], benchmark.support.labels, trained["test"])
        spent = trained["spent_seconds"] + clf.now() - start
        loo = reweightood.leave_one_out_accuracy(trained["support"], benchmark.support.labels)
        return {**trained["info"], **clf.criterion_record(loo, what="support_1nn_accuracy"), "normality": normality,
                "predictions": predictions, "spent_seconds": spent}

    return run


def _backbone_runner(name: str) -> Callable:
    """The source-pretrained backbone the support-trained methods start from, with no training on the support set,
    scored by `posthoc.BACKBONE_SCORES[name]` (KNN k = 1 on normalised features, or Mahalanobis)."""

    def run(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
        budget = clf.Budget(budget_s)
        model, note = clf.build_classifier(benchmark.num_known, settings)
        support = supervised.infer(model, benchmark.support, settings)["features"]
        test = supervised.infer(model, benchmark.test, settings)["features"]
        normality, predictions = posthoc.BACKBONE_SCORES[name](support, benchmark.support.labels, test)
        return {"train_seconds": 0.0, "epochs": 0.0, "steps": 0.0, "weights": note, "aux_data": NO_AUX,
                "criterion": "none (no training)", "criterion_value": float("nan"), "criterion_met": True,
                "normality": normality, "predictions": predictions, "spent_seconds": budget.spent(),
                "budget_s": budget.seconds}

    return run


METHODS: dict[str, Callable] = {
    **{f"backbone_{name}": _backbone_runner(name) for name in posthoc.BACKBONE_SCORES},
    **{name: _posthoc_runner(name) for name in posthoc.POSTHOC},
    "mixoe_mixup": _run_mixoe("mixup"),
    "mixoe_cutmix": _run_mixoe("cutmix"),
    "ssod": _run_ssod,
    "reweightood": _reweightood_runner(reweightood.mahalanobis_normality),
    "reweightood_knn": _reweightood_runner(reweightood.cider_normality),
}
BACKBONE = {f"backbone_{name}" for name in posthoc.BACKBONE_SCORES}
REWEIGHTOOD = {"reweightood", "reweightood_knn"}  # one trained network, two scores
POSTHOC = set(posthoc.POSTHOC)
NEEDS_OUTLIERS = {"mixoe_mixup", "mixoe_cutmix"}


def family(name: str) -> str:
    """The table's family of a comparison method."""
    if name in BACKBONE:
        return BACKBONE_FAMILY
    if name in POSTHOC:
        return "post-hoc on support classifier"
    return "trained on support + outliers" if name in NEEDS_OUTLIERS else "trained on support"


def methods_from_spec(spec: str) -> list[str]:
    """``"all"`` or a comma list (``"msp,ssod"``) -> method names, in registry order for ``all``."""
    if spec.strip() == "all":
        return list(METHODS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown comparison method(s) {unknown or [spec]}: valid ones are {', '.join(METHODS)}, or all")
    return names


def run_method(name: str, benchmark, settings: Settings, outliers=None, budget_s: float = 0.0,
               classifier=None) -> dict:
    """Run one method; return its metrics (auroc, fpr95, aupr_in, aupr_out, accuracy), family, train_seconds,
    epochs, steps, recipe, criterion, aux_data and the test ``normality`` array (higher = known). ``budget_s = 0``:
    the converged setting; ``classifier`` = a ``(model, train_info)`` from `classifier.train_support_classifier`
    to reuse (post-hoc detectors; MixOE's base in the converged setting)."""
    methods_from_spec(name)
    result = METHODS[name](benchmark, settings, outliers, budget_s, classifier)
    if name not in BACKBONE and result["steps"] == 0:  # no step fitted the budget: whatever it scores, it did not train
        result["criterion_met"] = False
    labels = np.asarray(benchmark.test.labels)
    metrics = novelty_metrics(result["normality"], benchmark.is_known(labels), result["predictions"], labels)
    return {**metrics, "family": family(name), **result}


def run_methods(names: list[str], benchmark, settings: Settings, outliers=None, budget_s: float = 0.0,
                progress: Callable | None = None) -> dict[str, dict]:
    """`run_method` for each name; the post-hoc detectors (and MixOE, converged) share one CE classifier, the two
    ReweightOOD scores one trained network."""
    shared, shared_reweightood, results = None, None, {}
    for name in (progress or (lambda x: x))(names):
        uses_shared = name in POSTHOC or (name in NEEDS_OUTLIERS and budget_s <= 0)
        if uses_shared and shared is None:
            shared = clf.train_support_classifier(benchmark, settings, budget_s)
        if name in REWEIGHTOOD and shared_reweightood is None:
            shared_reweightood = train_reweightood(benchmark, settings, budget_s)
        given = shared if uses_shared else shared_reweightood if name in REWEIGHTOOD else None
        results[name] = run_method(name, benchmark, settings, outliers, budget_s, given)
    return results


# What a derived PACS multi-source support is not (lib/splits/README.md): the paper's lists take 3 classes per domain
PACS_MS_DERIVED = "multi-source support with all 6 known classes from each source domain (the paper's: 3 of 6 each)"


def split_label(benchmark) -> str:
    """Which lists a benchmark read, as its table says it (`ORIGIN_LABELS`: the paper's, own, derived; embedded);
    a derived PACS multi-source benchmark also says that its support does not follow the paper's protocol."""
    split = getattr(benchmark, "split", "embedded")
    label = ORIGIN_LABELS.get(split, split)
    if split == "derived" and benchmark.name.startswith("pacs_ms_"):
        label += f"; {PACS_MS_DERIVED}"
    return label


def seeds_of(settings: Settings) -> list[int]:
    """The comparison seeds: ``seed, seed + 1, ...``, ``comparison_seeds`` of them."""
    return [settings.seed + i for i in range(settings.comparison_seeds)]


def record(result: dict) -> dict:
    """A result without its arrays, ready for JSON / a table row: strings and booleans kept, numbers as floats."""
    return {k: v if isinstance(v, (str, bool)) else float(v) for k, v in result.items()
            if k not in ("normality", "predictions")}


def run_seeds(names: list[str], benchmark, settings: Settings, outliers=None, budgets: dict[str, float] | None = None,
              seeds: list[int] | None = None, progress: Callable | None = None) -> tuple[pd.DataFrame, dict]:
    """`run_methods` for every setting of `budgets` (name -> budget_s; default ``{"converged": 0.0}``) and every seed
    (default `seeds_of`). Returns (rows, normality): one row per (setting, seed, method), the `record` of its result;
    ``normality["<setting>__seed<k>__<method>"]`` its test normality array. `progress` wraps each seed's list of
    method names (default: one `lib.progress` bar over every setting x seed x method)."""
    budgets = {CONVERGED: 0.0} if budgets is None else budgets
    split = split_label(benchmark)
    seeds = seeds_of(settings) if seeds is None else seeds
    bar = progress_bar(total=len(budgets) * len(seeds) * len(names), desc=f"comparisons {benchmark.name}",
                       unit="method", disable=progress is not None)
    rows, normality = [], {}
    for setting, budget_s in budgets.items():
        for seed in seeds:
            run = dataclasses.replace(settings, seed=seed)
            ticks = progress or (lambda items: each(items, bar, label=lambda n: f"{setting} seed {seed}: {n}"))
            for name, result in run_methods(names, benchmark, run, outliers, budget_s, ticks).items():
                rows.append({"method": name, "setting": setting, "seed": seed, "split": split, **record(result)})
                normality[f"{setting}__seed{seed}__{name}"] = result["normality"]
    bar.close()
    return pd.DataFrame(rows), normality


SUMMARY_KEYS = ("auroc", "fpr95", "fpr95_ood", "aupr_in", "aupr_out", "accuracy", "train_seconds", "spent_seconds",
                "budget_s", "epochs", "steps", "criterion_value")


def mean_std(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, setting) of `run_seeds` rows, in run order: family, aux_data, criterion, split (which
    lists a real benchmark read, `lib.datasets.real.ORIGIN_LABELS`; when the rows have it), then for each
    SUMMARY_KEYS column its mean over seeds and ``<key>_std`` (sample std, ddof 1: NaN for one seed),
    ``criterion_met`` (fraction of the seeds that met it) and ``n_seeds``."""
    groups = rows.groupby(["method", "setting"], sort=False)
    keys = [k for k in SUMMARY_KEYS if k in rows]
    mean, std = groups[keys].mean(), groups[keys].std(ddof=1).add_suffix("_std")
    labels = ["family", "aux_data", "criterion", *(["split"] if "split" in rows else [])]
    out = groups[labels].first().join(mean).join(std)
    out["criterion_met"] = groups["criterion_met"].mean()
    out["n_seeds"] = groups["seed"].nunique()
    order = [*labels, *[c for k in keys for c in (k, f"{k}_std")], "criterion_met", "n_seeds"]
    return out[order].reset_index()


def flat_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Flat keys of metrics.json from a `mean_std` table: ``auroc__ssod`` (converged mean), ``auroc_std__ssod``,
    ``criterion_met__ssod``, ``n_seeds__ssod``; other settings add ``__<setting>`` (``auroc__ssod__budget``)."""
    flat = {}
    for row in table.to_dict("records"):
        suffix = row["method"] + ("" if row["setting"] == CONVERGED else f"__{row['setting']}")
        for key, value in row.items():
            numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if key not in ("method", "setting") and numeric and np.isfinite(value):  # one seed: no std, no key
                flat[f"{key}__{suffix}"] = float(value)
    return flat


def _resend_by_config(study_dir, benchmark: str) -> pd.DataFrame:
    """Per ReSeND config of the study: mean and std over seeds of auroc, fpr95, accuracy, eval_seconds on
    `benchmark`, and n_seeds (empty when none)."""
    df = runs.collect(study_dir) if study_dir else pd.DataFrame()
    if df.empty or f"auroc__{benchmark}" not in df:
        return pd.DataFrame()
    names = {f"{m}__{benchmark}": m for m in ("auroc", "fpr95", "accuracy", "eval_seconds") if f"{m}__{benchmark}" in df}
    df = df.rename(columns=names).dropna(subset=["auroc"])
    groups = df.groupby("config", sort=False)
    keys = list(names.values())
    out = groups[keys].mean().join(groups[keys].std(ddof=1).add_suffix("_std"))
    out["n_seeds"] = groups["seed"].nunique()
    return out


def resend_results(study_dir, benchmark: str, fixed: str = FIXED_RESEND_CONFIG) -> pd.DataFrame:
    """The ReSeND rows for `benchmark` from a study folder's run folders (mean ± sample std over seeds):
    ``resend_eccv`` (`fixed`; ``resend_<fixed>`` for another), the published method, the a-priori choice, and
    ``resend_best_of_<n>``, the study's configuration of best mean test AUROC among its n (chosen after seeing the
    study, on the test set: optimistic, labelled so). Empty frame when the study has no run."""
    by_config = _resend_by_config(study_dir, benchmark)
    if by_config.empty:
        return pd.DataFrame()
    best = by_config["auroc"].idxmax()
    fixed_method = fixed if fixed.startswith("resend") else f"resend_{fixed}"
    picks = ([(fixed_method, fixed, "the published method, fixed in advance")] if fixed in by_config.index
             else []) + [(f"resend_best_of_{len(by_config)}", best, f"chosen after seeing the study: best test AUROC "
                                                                    f"of {len(by_config)} configs (optimistic)")]
    return pd.DataFrame([{"method": method, "setting": "no support training", "family": "ReSeND (no support training)",
                          "aux_data": "relational source set only", "config": config, "selection": selection,
                          **by_config.loc[config].to_dict()} for method, config, selection in picks])


def resend_eval_seconds(study_dir, benchmark: str) -> float | None:
    """Mean ReSeND evaluation seconds on `benchmark` over the study's configs: the finetuning budget (docs/METHOD.md §10)."""
    by_config = _resend_by_config(study_dir, benchmark)
    if "eval_seconds" not in by_config or by_config["eval_seconds"].dropna().empty:
        return None
    return float(by_config["eval_seconds"].mean())


def budget_settings(budget_s: float, study_dir, benchmark: str) -> tuple[dict[str, float], dict]:
    """The settings to run (name -> budget_s of `run_seeds`) and where the budget came from (the ``env.json`` keys
    ``comparison_budget_s`` and ``comparison_budget_from``). ReSeND §5.3's rule (docs/METHOD.md §10): a positive
    `budget_s` wins; else the ReSeND evaluation seconds on `benchmark` of the `study_dir` runs
    (`resend_eval_seconds`); the converged setting always runs, the ``budget`` one only when a budget is known."""
    resend_seconds = resend_eval_seconds(study_dir, benchmark) if study_dir else None
    budget = budget_s or resend_seconds or 0.0
    source = "budget_s" if budget_s else ("resend eval seconds" if resend_seconds else "none")
    budgets = {CONVERGED: 0.0, **({"budget": budget} if budget > 0 else {})}
    return budgets, {"comparison_budget_s": budget, "comparison_budget_from": source}


NORMALITY_FILE = "normality.npz"  # per-image scores of every setting x seed x method, committed beside the table


def write_results(run_dir, rows: pd.DataFrame, normality: dict[str, np.ndarray], is_known: np.ndarray):
    """Record the `run_seeds` results in `run_dir`: ``methods.csv`` (one row per setting x seed x method),
    ``normality.npz`` (compressed: ``is_known`` and every normality array as float32, small enough to commit) and
    their `mean_std` table merged into ``metrics.json`` (`flat_metrics`). Returns (the `mean_std` table, the merged
    metrics)."""
    table = mean_std(rows)
    metrics = runs.write_metrics(run_dir, flat_metrics(table))
    runs.atomic_write_text(Path(run_dir) / "methods.csv", rows.to_csv(index=False))
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in normality.items()}
    np.savez_compressed(Path(run_dir) / NORMALITY_FILE, is_known=np.asarray(is_known, dtype=bool), **arrays)
    return table, metrics


def recompute_auroc(run_dir) -> pd.DataFrame:
    """The AUROC of every row of ``methods.csv`` recomputed from ``normality.npz`` alone: the rows' method, setting,
    seed, their recorded ``auroc`` and ``auroc_recomputed`` (float32 scores: equal up to ties the rounding makes)."""
    rows = pd.read_csv(Path(run_dir) / "methods.csv")
    with np.load(Path(run_dir) / NORMALITY_FILE) as saved:
        is_known = saved["is_known"]
        scores = [saved[f"{r.setting}__seed{r.seed}__{r.method}"].astype(np.float64) for r in rows.itertuples()]
    recomputed = [novelty_metrics(normality, is_known)["auroc"] for normality in scores]
    return rows[["method", "setting", "seed", "auroc"]].assign(auroc_recomputed=recomputed)


def _mean_cell(row: dict, key: str) -> str:
    value, std = row.get(key), row.get(f"{key}_std")
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.3f}" + ("" if std is None or pd.isna(std) else f" ± {std:.3f}")


def spent_key(row: dict) -> str:
    """The seconds a row spent on the benchmark: ``spent_seconds`` of a comparison method, ``eval_seconds`` of a
    ReSeND row (its evaluation, feature extraction included: the budget itself)."""
    return "spent_seconds" if not pd.isna(row.get("spent_seconds", float("nan"))) else "eval_seconds"


def readable_table(table: pd.DataFrame) -> pd.DataFrame:
    """A `comparison_table` as read: one row per method and setting, cells ``mean ± sample std`` (ddof 1) over the
    seeds; a trained row whose training criterion was not met on every seed reads ``did not train (criterion met
    on k of n seeds)`` instead of its numbers (its mean is not a result of the method)."""
    out = []
    for row in table.to_dict("records"):
        met, n = row.get("criterion_met"), row.get("n_seeds")
        untrained = met is not None and not pd.isna(met) and met < 1
        numbers = {"AUROC": _mean_cell(row, "auroc"), "FPR95": _mean_cell(row, "fpr95"),
                   "accuracy": _mean_cell(row, "accuracy")}
        if untrained:
            numbers = dict.fromkeys(numbers, f"did not train (criterion met on {round(met * n)} of {int(n)} seeds)")
        out.append({"method": row["method"], "setting": row.get("setting"), "family": row.get("family"),
                    "aux_data": row.get("aux_data"), **({"split": row["split"]} if "split" in row else {}),
                    **numbers, "spent s": _mean_cell(row, spent_key(row)),
                    "seeds": "–" if n is None or pd.isna(n) else int(n)})
    return pd.DataFrame(out)


def markdown_table(table: pd.DataFrame) -> str:
    """`readable_table` as markdown, under a line stating its conventions (written as ``comparisons.md``)."""
    readable = readable_table(table).fillna("–")
    header = ("Cells: mean ± sample std (ddof 1) over the seeds; AUROC with known = positive; FPR95 = unknown "
              "accepted at 95 % known accepted; spent s = everything the method spent on the benchmark. A row "
              "whose training criterion was not met on every seed reads \"did not train\".\n\n")
    lines = ["| " + " | ".join(readable.columns) + " |", "|" + "---|" * len(readable.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in readable.itertuples(index=False)]
    return header + "\n".join(lines) + "\n"


def comparison_table(table: pd.DataFrame, resend_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ReSeND rows first, then the `mean_std` rows of the comparison methods (one per method and setting)."""
    frames = [f for f in (resend_rows, table) if f is not None and not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else table
