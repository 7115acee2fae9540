"""A training study's analysis: the runs (variants × seeds) summarised, compared and set against the book.

Each run of the study wrote ``history.csv``, ``samples.csv`` and ``metrics.json`` into its folder
(:func:`gptlab.study.runs.run_pretraining` with ``metrics``). From them:

- :func:`summarize_runs`: one row per run (final, best and gap of the losses, speed, the run's
  settings) and each run's last sample, as two tables with their provenance;
- :func:`seed_spread`: per variant, how much a metric varies with the seed, and a t-interval of its mean;
- :func:`variant_effects`: each variant against the baseline, paired by seed when they share their
  seeds (Welch's interval otherwise), with a verdict: helped, hurt or no clear difference;
- :func:`book_is_typical`: where the book's printed final validation loss lies among the baseline's
  seeds, and only when the baseline has the book's settings (:func:`book_settings_differences`).

Intervals use Student's t distribution (:func:`gptlab.experiments.stats.t_quantile`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_table
from .common import read_table
from .stats import t_quantile

RUN_COLUMNS = ["run", "variant", "seed"]
METRIC_COLUMNS = (
    "final_train_loss final_val_loss best_val_loss best_epoch best_step train_val_gap "
    "epochs tokens_seen wall_seconds tokens_per_second peak_rss_mb"
).split()
SAMPLE_COLUMNS = ["run", "variant", "seed", "epoch", "text"]
_LOSS_LINE = re.compile(r"Ep (\d+) \(Step (\d+)\): Train loss ([\d.]+), Val loss ([\d.]+)")


# --------------------------------------------------------------------------- the book's run


def book_curve() -> pd.DataFrame:
    """The book's printed loss lines as a table: ``epoch, global_step, train_loss, val_loss``."""
    from ..training.book import BOOK_LOSS_LINES  # imports torch: only when the book's values are needed

    rows = [_LOSS_LINE.fullmatch(line).groups() for line in BOOK_LOSS_LINES]
    table = pd.DataFrame(rows, columns=["epoch", "global_step", "train_loss", "val_loss"])
    return table.astype({"epoch": int, "global_step": int, "train_loss": float, "val_loss": float})


def book_settings() -> dict:
    """The book's run as flattened settings (``model.*``, ``data.*``, ``training.*``); not its seed, which
    the study varies, nor fast mode, which changes only rounding."""
    from ..training.book import BOOK_MODEL_CONFIG, BOOK_SETTINGS

    train = BOOK_SETTINGS.for_model(BOOK_MODEL_CONFIG)
    data = ("train_ratio", "batch_size", "max_length", "stride")
    training = ("num_epochs", "learning_rate", "weight_decay", "eval_freq", "eval_iter", "start_context")
    return {
        **{f"model.{k}": v for k, v in BOOK_MODEL_CONFIG.items()},
        **{f"data.{k}": getattr(train, k) for k in data},
        **{f"training.{k}": getattr(train, k) for k in training},
    }


def _same(a, b) -> bool:
    """Equal settings: numbers to rounding, anything else as text; two missing values are the same."""
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    numbers = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in (a, b))
    return math.isclose(float(a), float(b), rel_tol=1e-9) if numbers else str(a) == str(b)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def book_settings_differences(settings: dict | pd.Series) -> list[str]:
    """How a run's flattened settings differ from the book's run ("model.context_length: 64, the book 256").

    The seed and fast mode are not compared; ``data.max_length``/``data.stride`` left empty mean the
    model's context, as in :class:`~gptlab.training.config.TrainConfig`; the corpus must name The Verdict.
    """
    settings = dict(settings)
    if _missing(settings.get("data.max_length")):
        settings["data.max_length"] = settings.get("model.context_length")
    if _missing(settings.get("data.stride")):
        settings["data.stride"] = settings.get("data.max_length")
    differences = []
    for key, book in book_settings().items():
        here = settings.get(key)
        if _missing(here) or not _same(here, book):
            differences.append(f"{key}: {_text(here)}, the book {book}")
    corpus = _text(settings.get("corpus"))
    if not re.search(r"the[\s_-]*verdict", corpus, re.IGNORECASE):
        differences.append(f"corpus: {corpus}, the book The Verdict")
    return differences


def _half_width(se: float, df: float, confidence: float) -> float:
    """Half the width of a two-sided t-interval; NaN when it cannot be computed (too few values)."""
    if not (df > 0 and math.isfinite(se)):
        return math.nan
    return 0.0 if se == 0 else t_quantile((1.0 + confidence) / 2.0, df) * se


# --------------------------------------------------------------------------- summarising the runs


def flatten_settings(settings: dict, prefix: str = "") -> dict:
    """``{"model": {"drop_rate": 0.1}, "corpus": "..."}`` → ``{"model.drop_rate": 0.1, "corpus": "..."}``."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def _summarize_run(run: dict) -> tuple[dict, dict, dict]:
    """A run's summary row, its last sample and what its sidecar part records."""
    history = read_table(run["history"])
    if history.empty:
        raise ValueError(f"{run['history']} holds no evaluation: run {run['run']} cannot be summarised")
    metrics = json.loads(Path(run["metrics"]).read_text(encoding="utf-8"))
    samples = pd.read_csv(run["samples"], keep_default_na=False)
    final, best = history.iloc[-1], history.loc[history["val_loss"].idxmin()]
    row = {"run": run["run"], "variant": run["variant"], "seed": int(run["seed"])}
    row |= {
        "final_train_loss": float(final["train_loss"]),
        "final_val_loss": float(final["val_loss"]),
        "best_val_loss": float(best["val_loss"]),
        "best_epoch": int(best["epoch"]),
        "best_step": int(best["global_step"]),
        "train_val_gap": float(final["val_loss"] - final["train_loss"]),
    }
    row |= {k: metrics.get(k) for k in METRIC_COLUMNS if k not in row}
    row |= flatten_settings(metrics.get("settings") or {})
    last = samples.loc[samples["epoch"].idxmax()] if len(samples) else {"epoch": None, "text": ""}
    sample = {**{k: row[k] for k in RUN_COLUMNS}, "epoch": last["epoch"], "text": last["text"]}
    return row, sample, {"run": run["run"], "corpus": row.get("corpus"), "machine": metrics.get("machine")}


def variant_order(variants, baseline: str, order=None) -> list[str]:
    """The baseline first, then ``order`` (the configuration's), then any other variant as it comes."""
    listed = [baseline, *(order or []), *variants]
    return [v for v in dict.fromkeys(listed) if v in set(variants)]


def _sorted(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = table["variant"].map({v: i for i, v in enumerate(order)})
    return table.assign(_rank=rank).sort_values(["_rank", "seed"], kind="stable").drop(columns="_rank")


def summarize_runs(runs, summary_csv, samples_csv, variants=None, baseline: str = "book"):
    """Summarise a study's runs into ``summary_csv`` (one row per run) and ``samples_csv`` (last samples).

    ``runs``: dicts ``{"run", "variant", "seed", "history", "samples", "metrics"}`` (paths). Rows are
    sorted by variant (``baseline`` first, then the order of ``variants``) and seed. The sidecars
    record the study and each run's machine. Returns ``(summary, samples)``.
    """
    if not runs:
        raise ValueError("no runs to summarise")
    rows, samples, parts = zip(*(_summarize_run(run) for run in runs), strict=True)
    summary = pd.DataFrame(list(rows))
    order = variant_order(summary["variant"].unique(), baseline, variants)
    summary = _sorted(summary, order).reset_index(drop=True)
    by_run, part = {run["run"]: run for run in runs}, {p["run"]: p for p in parts}
    finals = _sorted(pd.DataFrame(samples, columns=SAMPLE_COLUMNS), order).reset_index(drop=True)
    study = {"baseline": baseline, "variants": order, "seeds": sorted(set(summary["seed"].tolist()))}
    described = (
        "training study: one row per run (variant × seed); the losses of its last evaluation, "
        "its lowest validation loss, its speed and its settings"
    )
    parts = {str(by_run[name]["history"]): part[name] for name in summary["run"]}  # in the table's order
    write_table(summary, summary_csv, {"experiment": described, **study, "parts": parts})
    described = "training study: each run's greedy sample after its last epoch"
    parts = {str(by_run[name]["samples"]): part[name] for name in summary["run"]}
    write_table(finals, samples_csv, {"experiment": described, **study, "parts": parts})
    return summary, finals


# --------------------------------------------------------------------------- statistics


def _mean_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean, sd and the half-width of the t-interval of the mean (NaN below two values)."""
    n = len(values)
    mean = float(np.mean(values)) if n else math.nan
    sd = float(np.std(values, ddof=1)) if n > 1 else math.nan
    return mean, sd, _half_width(sd / math.sqrt(n), n - 1, confidence) if n > 1 else math.nan


def _spread(values: np.ndarray, confidence: float) -> dict:
    mean, sd, half = _mean_interval(values, confidence)
    low, high = (float(values.min()), float(values.max())) if len(values) else (math.nan, math.nan)
    return {"n": len(values), "mean": mean, "sd": sd, "min": low, "max": high} | {
        "ci_low": mean - half,
        "ci_high": mean + half,
    }


def seed_spread(summary, metric: str = "final_val_loss", confidence: float = 0.95) -> pd.DataFrame:
    """Per variant (in the summary's order): ``n``, ``mean``, ``sd``, ``min``, ``max`` of ``metric`` over
    its seeds, and the t-interval of the mean, ``ci_low``..``ci_high`` (NaN with a single seed)."""
    summary = read_table(summary)
    return pd.DataFrame(
        {"variant": variant, **_spread(group[metric].dropna().to_numpy(dtype=float), confidence)}
        for variant, group in summary.groupby("variant", sort=False)
    )


def _by_seed(summary: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    return summary.loc[summary["variant"] == variant].set_index("seed")[metric].dropna()


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Standard error and Welch–Satterthwaite degrees of freedom of mean(a) − mean(b)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
    return se, df


def _effect(variant: pd.Series, base: pd.Series, confidence: float) -> dict:
    unique = variant.index.is_unique and base.index.is_unique
    paired = unique and len(variant) > 1 and sorted(variant.index) == sorted(base.index)
    if paired:
        d = (variant - base.reindex(variant.index)).to_numpy(dtype=float)
        difference, sd, half = _mean_interval(d, confidence)
        method = "paired by seed"
    else:
        a, b = variant.to_numpy(dtype=float), base.to_numpy(dtype=float)
        difference = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        se, df = _welch(a, b)
        half, method = _half_width(se, df, confidence), "Welch"
    return {
        "method": method,
        "difference": difference,
        "ci_low": difference - half,
        "ci_high": difference + half,
    }


def _verdict(low: float, high: float, lower_is_better: bool) -> str:
    if math.isnan(low) or math.isnan(high):
        return "too few seeds to tell"
    if low > 0 or high < 0:
        return "helped" if (high < 0) == lower_is_better else "hurt"
    return "no clear difference"


def variant_effects(
    summary, baseline: str, metric: str = "final_val_loss", confidence: float = 0.95, lower_is_better=True
) -> pd.DataFrame:
    """Each variant other than ``baseline``: ``difference`` = variant − baseline in ``metric`` and its
    t-interval (``ci_low``..``ci_high``), ``method`` "paired by seed" (the mean of per-seed differences,
    when both have the same seeds) or "Welch", ``n``/``n_baseline`` (seeds), and ``verdict``: "helped"
    or "hurt" when the interval excludes 0 (lower is better unless ``lower_is_better`` is false), else
    "no clear difference" ("too few seeds to tell" without an interval)."""
    summary = read_table(summary)
    base = _by_seed(summary, baseline, metric)
    if base.empty:
        raise ValueError(f"the baseline {baseline!r} has no run with {metric}")
    rows = []
    for variant in summary.loc[summary["variant"] != baseline, "variant"].unique():
        values = _by_seed(summary, variant, metric)
        effect = _effect(values, base, confidence)
        effect["verdict"] = _verdict(effect["ci_low"], effect["ci_high"], lower_is_better)
        means = {"mean": float(values.mean()), "baseline_mean": float(base.mean())}
        rows.append({"variant": variant, "n": len(values), "n_baseline": len(base), **means, **effect})
    columns = ["variant", "n", "n_baseline", "mean", "baseline_mean", "method", "difference"]
    return pd.DataFrame(rows, columns=[*columns, "ci_low", "ci_high", "verdict"])


def _typicality(book: float, values: np.ndarray, confidence: float) -> dict:
    """The book's value against single runs: range, z-score and the prediction interval of one more run."""
    spread, n = _spread(values, confidence), len(values)
    mean, sd = spread["mean"], spread["sd"]
    predict = _half_width(sd * math.sqrt(1 + 1 / n), n - 1, confidence) if n > 1 else math.nan
    return spread | {
        "pi_low": mean - predict,
        "pi_high": mean + predict,
        "z": (book - mean) / sd if n > 1 and sd > 0 else math.nan,
        "within_range": bool(spread["min"] <= book <= spread["max"]),
        "in_prediction_interval": bool(mean - predict <= book <= mean + predict),
    }


def book_is_typical(
    summary, baseline: str, book_value: float | None = None, confidence: float = 0.95
) -> dict:
    """Where the book's final validation loss (``book_value``, default its printed 6.452) lies among the
    baseline's seeds.

    Returns the baseline's spread (as :func:`seed_spread`), ``pi_low``/``pi_high`` (the prediction
    interval of one more run, mean ± t·sd·√(1 + 1/n)), ``z``, ``within_range``, ``in_prediction_interval``,
    ``differences`` (:func:`book_settings_differences`: none makes it ``comparable``), ``book_seed`` (123)
    and ``book_seed_value`` (the baseline's run with that seed, if any) and ``verdict``: "typical" (inside the
    prediction interval), "lower than usual", "higher than usual", "too few seeds to tell" or, when
    the settings are not the book's, "not comparable".
    """
    summary = read_table(summary)
    rows = summary.loc[summary["variant"] == baseline]
    values = rows["final_val_loss"].dropna().to_numpy(dtype=float)
    if not len(values):
        raise ValueError(f"the summary has no run of the baseline {baseline!r} with a final validation loss")
    book_value = float(book_curve()["val_loss"].iloc[-1] if book_value is None else book_value)
    result = {"baseline": baseline, "book_value": book_value, **_typicality(book_value, values, confidence)}
    settings = _settings(rows).iloc[0]
    result["differences"] = book_settings_differences(settings)
    result["comparable"] = not result["differences"]
    from ..training.book import BOOK_SETTINGS

    own = rows.loc[rows["seed"] == BOOK_SETTINGS.seed, "final_val_loss"]
    result["book_seed"] = BOOK_SETTINGS.seed
    result["book_seed_value"] = float(own.iloc[0]) if len(own) else None
    if not result["comparable"]:
        result["verdict"] = "not comparable"
    elif math.isnan(result["pi_low"]):
        result["verdict"] = "too few seeds to tell"
    elif result["in_prediction_interval"]:
        result["verdict"] = "typical"
    else:
        result["verdict"] = "lower than usual" if book_value < result["pi_low"] else "higher than usual"
    return result


def variant_changes(summary, baseline: str) -> dict[str, list[str]]:
    """Per variant, the settings it changes from the baseline's: ``["model.drop_rate 0.1 → 0.0", ...]``."""
    summary = read_table(summary)
    settings = _settings(summary).drop(columns=["training.seed"], errors="ignore")
    first = settings.assign(variant=summary["variant"]).groupby("variant", sort=False).first()
    base = first.loc[baseline]
    changes = {}
    for variant, row in first.iterrows():
        changed = [k for k in first.columns if not _same(row[k], base[k])]
        changes[variant] = [f"{k} {_text(base[k])} → {_text(row[k])}" for k in changed]
    return changes


def _settings(summary: pd.DataFrame) -> pd.DataFrame:
    """The settings columns of a summary (``model.*``, ``data.*``, ``training.*``, ``corpus``)."""
    return summary.drop(columns=[*RUN_COLUMNS, *METRIC_COLUMNS], errors="ignore")


def _text(value) -> str:
    return "not recorded" if _missing(value) else str(value)
