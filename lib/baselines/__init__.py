"""Comparison methods (SPEC 10): trained or fitted on the benchmark's support set, which ReSeND never is.

`METHODS` maps a name to its runner ``runner(benchmark, settings, outliers, budget_s, classifier) -> dict``
returning ``{"normality", "predictions", "train_seconds", "epochs", "steps", ...}``; `run_method` adds the
metrics of `lib.evaluate.novelty_metrics` (normality: higher = known). The six post-hoc detectors share
one support-set CE classifier: `run_methods` trains it once and passes it to each.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from lib.baselines import classifier as clf
from lib.baselines import mixoe, posthoc, reweightood, ssod
from lib.config import Settings


def _trained(benchmark, settings: Settings, make_loss, budget_s: float, views: int = 1):
    model, note = clf.build_classifier(benchmark.num_known, settings)
    info = clf.train_classifier(model, make_loss, benchmark.support, settings, budget_s, views=views)
    info["weights"] = note
    return model, info


def _posthoc_runner(name: str) -> Callable:
    def run(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
        if classifier is None:
            classifier = clf.train_support_classifier(benchmark, settings, budget_s)
        model, info = classifier
        start = time.perf_counter()
        cache = model.__dict__.setdefault("posthoc_outputs", {})  # one inference pass shared by the six detectors
        key = (benchmark.name, id(benchmark.test), settings.image_size)
        if key not in cache:
            cache[key] = (clf.infer(model, benchmark.support, settings), clf.infer(model, benchmark.test, settings))
        support_out, test_out = cache[key]
        normality = posthoc.posthoc_normality(name, model, support_out, test_out, benchmark.test,
                                              benchmark.support.labels, settings)
        return {**info, "normality": normality, "predictions": test_out["logits"].argmax(1).numpy(),
                "score_seconds": time.perf_counter() - start}

    return run


def _run_mixoe(variant: str) -> Callable:
    def run(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
        if outliers is None or len(outliers) == 0:
            raise ValueError(f"mixoe_{variant} needs auxiliary outliers: pass data.outlier_pool(benchmark, settings)")
        model, info = _trained(benchmark, settings, mixoe.mixoe_loss(variant, outliers), budget_s)
        out = clf.infer(model, benchmark.test, settings)
        msp = out["logits"].double().softmax(dim=1).max(dim=1).values.numpy()
        return {**info, "normality": msp, "predictions": out["logits"].argmax(1).numpy()}

    return run


def _run_ssod(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
    model, info = _trained(benchmark, settings, ssod.ssod_loss(), budget_s)
    out = clf.infer(model, benchmark.test, settings, outputs=ssod.ood_head_outputs)
    return {**info, "normality": ssod.ssod_score(out["logits"], out["ood_logits"]),
            "predictions": out["logits"].argmax(1).numpy()}


def _run_reweightood(benchmark, settings, outliers=None, budget_s=0.0, classifier=None):
    model, info = _trained(benchmark, settings, reweightood.reweightood_loss(), budget_s, views=2)
    support_out = clf.infer(model, benchmark.support, settings)
    test_out = clf.infer(model, benchmark.test, settings)
    normality, predictions = reweightood.mahalanobis_normality(
        support_out["features"], benchmark.support.labels, test_out["features"])
    return {**info, "normality": normality, "predictions": predictions}


METHODS: dict[str, Callable] = {
    **{name: _posthoc_runner(name) for name in posthoc.POSTHOC},
    "mixoe_mixup": _run_mixoe("mixup"),
    "mixoe_cutmix": _run_mixoe("cutmix"),
    "ssod": _run_ssod,
    "reweightood": _run_reweightood,
}
POSTHOC = set(posthoc.POSTHOC)
NEEDS_OUTLIERS = {"mixoe_mixup", "mixoe_cutmix"}


def methods_from_spec(spec: str) -> list[str]:
    """``"all"`` or a comma list (``"msp,ssod"``) -> method names, in registry order for ``all``."""
    if spec.strip() == "all":
        return list(METHODS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown comparison method(s) {unknown or [spec]}: valid ones are {', '.join(METHODS)}, or all")
    return names


def run_method(name: str, benchmark, settings: Settings, outliers=None, budget_s: float | None = None,
               classifier=None) -> dict:
    """Run one method; return its metrics (auroc, fpr95, aupr_in, aupr_out, accuracy), train_seconds,
    epochs, steps and the test ``normality`` array (higher = known). ``budget_s=None`` = ``settings.budget_s``;
    ``classifier`` = a ``(model, train_info)`` from `classifier.train_support_classifier` to reuse (post-hoc)."""
    from lib import evaluate

    methods_from_spec(name)
    budget_s = settings.budget_s if budget_s is None else budget_s
    result = METHODS[name](benchmark, settings, outliers, budget_s, classifier)
    labels = np.asarray(benchmark.test.labels)
    metrics = evaluate.novelty_metrics(result["normality"], benchmark.is_known(labels), result["predictions"], labels)
    return {**metrics, **result}


def run_methods(names: list[str], benchmark, settings: Settings, outliers=None, budget_s: float | None = None,
                progress: Callable | None = None) -> dict[str, dict]:
    """`run_method` for each name; the post-hoc detectors share one support-set classifier (trained once)."""
    budget_s = settings.budget_s if budget_s is None else budget_s
    shared, results = None, {}
    for name in (progress or (lambda x: x))(names):
        if name in POSTHOC and shared is None:
            shared = clf.train_support_classifier(benchmark, settings, budget_s)
        results[name] = run_method(name, benchmark, settings, outliers, budget_s, shared if name in POSTHOC else None)
    return results


def flat_metrics(results: dict[str, dict], keys=("auroc", "fpr95", "aupr_in", "aupr_out", "accuracy",
                                                  "train_seconds", "epochs", "steps")) -> dict[str, float]:
    """``{"auroc__ssod": ..., "train_seconds__msp": ...}``: the flat keys of metrics.json."""
    return {f"{key}__{name}": float(result[key]) for name, result in results.items() for key in keys if key in result}


def resend_results(study_dir, benchmark: str):
    """ReSeND rows for `benchmark` from a study folder's run folders: one per objective config, mean over seeds
    of ``auroc__<b>``, ``fpr95__<b>``, ``accuracy__<b>``, ``eval_seconds__<b>`` (empty frame when none)."""
    import pandas as pd

    from lib import summary

    df = summary.collect(study_dir) if study_dir else pd.DataFrame()
    columns = {f"{m}__{benchmark}": m for m in ("auroc", "fpr95", "accuracy", "eval_seconds")}
    if df.empty or f"auroc__{benchmark}" not in df:
        return pd.DataFrame(columns=["method", "family", *columns.values(), "n_seeds"])
    present = [c for c in columns if c in df]
    agg = df.groupby("config", sort=False)[present].mean().rename(columns=columns)
    agg["n_seeds"] = df.groupby("config", sort=False)["seed"].count()
    agg = agg.dropna(subset=["auroc"]).reset_index().rename(columns={"config": "method"})
    agg["method"] = "resend_" + agg["method"]
    agg["family"] = "ReSeND (no support training)"
    return agg


def resend_eval_seconds(study_dir, benchmark: str) -> float | None:
    """Mean ReSeND evaluation seconds on `benchmark` over the study's runs: the finetuning budget (SPEC 10)."""
    rows = resend_results(study_dir, benchmark)
    if "eval_seconds" not in rows or rows["eval_seconds"].dropna().empty:
        return None
    return float(rows["eval_seconds"].mean())


def comparison_table(results: dict[str, dict], resend_rows=None):
    """One row per method (ReSeND objectives first): method, family, auroc, fpr95, aupr_in, aupr_out, accuracy,
    train_seconds, epochs."""
    import pandas as pd

    family = lambda n: "post-hoc on support classifier" if n in POSTHOC else "trained on support"  # noqa: E731
    keys = ("auroc", "fpr95", "aupr_in", "aupr_out", "accuracy", "train_seconds", "epochs")
    rows = [{"method": n, "family": family(n), **{k: float(r[k]) for k in keys if k in r}} for n, r in results.items()]
    frames = [f for f in (resend_rows, pd.DataFrame(rows)) if f is not None and not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(rows)
