"""Figures of the experiments (matplotlib, Agg backend; PNG and PDF): decoding, losses, sizes.

Each ``plot_*`` function takes the DataFrame an experiment wrote (or reads it
back from CSV) and returns a figure; :func:`gptlab.io.save_figure` writes it to
one or more files (the format from each suffix), atomically.
:func:`write_all_heatmaps` does both for every metric of 5.2.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..generation import TOY_NEXT_TOKEN_LOGITS, TOY_VOCAB  # noqa: E402
from ..io import save_figure  # noqa: E402
from .common import read_table, top_k_order  # noqa: E402
from .metrics import METRICS  # noqa: E402
from .pizza import BOOK_TEMPERATURES, exact_probabilities  # noqa: E402

METRIC_LABELS = {
    "distinct_1": "distinct-1 (unique tokens / tokens)",
    "distinct_2": "distinct-2 (unique bigrams / bigrams)",
    "repetition_rate": "repetition rate (repeated 4-grams)",
    "mean_logprob": "mean log-probability per token (untempered model)",
    "verbatim_span": "longest span copied from the training text (tokens)",
    "unique_text_fraction": "fraction of seeds giving different texts",
}
SHORT_LABELS = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "repetition_rate": "repetition rate (4-grams)",
    "mean_logprob": "mean log-prob / token",
    "verbatim_span": "longest copied span (tokens)",
    "train_loss": "training loss",
    "val_loss": "validation loss",
}


def plot_toy_distributions(temperatures=BOOK_TEMPERATURES):
    """The toy vocabulary's next-token probabilities at several temperatures (book figure 5.14)."""
    logits = torch.tensor(TOY_NEXT_TOKEN_LOGITS)
    words = list(TOY_VOCAB)
    x = np.arange(len(words))
    width = 0.8 / len(temperatures)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, t in enumerate(temperatures):
        probs = exact_probabilities(logits, t).numpy()
        ax.bar(x + (i - (len(temperatures) - 1) / 2) * width, probs, width, label=f"Temperature = {t:g}")
    ax.set_xticks(x, words, rotation=90)
    ax.set_ylabel("Probability")
    ax.set_title("Next-token probabilities of the toy vocabulary, scaled by temperature", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_pizza_sweep(sweep, token="pizza"):
    """Exact ``softmax(logits / T)[token]`` against the sampled frequency with its confidence interval."""
    df = read_table(sweep)
    d = df[df["token"] == token].sort_values("temperature")
    if d.empty:
        raise ValueError(f"token {token!r} is not in the sweep; it has {sorted(df['token'].unique())}")
    n, conf, seed = int(d["num_draws"].iloc[0]), float(d["confidence"].iloc[0]), int(d["seed"].iloc[0])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.fill_between(
        d["temperature"],
        d["ci_low"],
        d["ci_high"],
        color="C1",
        alpha=0.25,
        label=f"{conf:.0%} {d['interval'].iloc[0]} interval of the sampled frequency",
    )
    ax.plot(
        d["temperature"],
        d["empirical_prob"],
        "o",
        ms=3,
        color="C1",
        label=f"sampled ({n} draws, seed {seed})",
    )
    ax.plot(d["temperature"], d["exact_prob"], "-", color="C0", label="exact softmax(logits / T)")
    for t in BOOK_TEMPERATURES:
        ax.axvline(t, color="gray", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("Temperature (log scale; dotted: the book's 0.1, 1, 5)")
    ax.set_ylabel(f"P('{token}')")
    ax.set_title(f"Probability of sampling '{token}': exact vs {n} draws", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_next_token_probability(table):
    """Probability of the target token after each prompt, per model, across temperatures (log y)."""
    df = read_table(table)
    prompts = list(dict.fromkeys(df["prompt"]))
    fig, axes = plt.subplots(1, len(prompts), figsize=(4.2 * len(prompts), 3.6), squeeze=False, sharey=True)
    for ax, prompt in zip(axes[0], prompts, strict=True):
        d = df[df["prompt"] == prompt]
        for model, m in d.groupby("model", sort=False):
            ax.plot(
                m["temperature"],
                m["prob"].clip(lower=1e-300),
                "o-",
                ms=3,
                label=f"{model} (rank {int(m['rank'].iloc[0])})",
            )
        ax.set_yscale("log")
        ax.set_xlabel("Temperature")
        ax.set_title(f"after {prompt!r}", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"P({df['target'].iloc[0]!r} next)")
    fig.suptitle(f"Next-token probability of {df['target'].iloc[0]!r} under each model", fontsize=10)
    fig.tight_layout()
    return fig


def plot_sweep_heatmap(cells, metric):
    """One metric over temperature (rows) × top-k (columns), one panel per model."""
    df = read_table(cells)
    col = metric if metric in df.columns else f"{metric}_mean"
    if col not in df.columns:
        raise ValueError(f"metric {metric!r} is not in the cell table; choose from {list(METRICS)}")
    df = df.assign(top_k_label=df["top_k_label"].astype(str))
    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(max(7.0, 4.8 * len(models)), 3.9), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        d = df[df["model"] == model]
        grid = d.pivot(index="temperature", columns="top_k_label", values=col)
        grid = grid[top_k_order(grid.columns)].sort_index()
        values = grid.to_numpy(dtype=float)
        im = ax.imshow(values, aspect="auto", cmap="viridis")
        mid = np.nanmean([np.nanmin(values), np.nanmax(values)])
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):  # dark text on the light (high) end of viridis, white on the dark end
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="k" if v > mid else "w")
        ax.set_xticks(range(grid.shape[1]), grid.columns)
        ax.set_yticks(range(grid.shape[0]), [f"{t:g}" for t in grid.index])
        ax.set_xlabel("top-k ('all' = no filtering)")
        ax.set_ylabel("Temperature")
        ax.set_title(model, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)}: mean over prompts and seeds", fontsize=10)
    fig.tight_layout()
    return fig


def plot_determinism_table(table):
    """The 5.3 audit as a coloured table: green = the book's expectation held, red = it did not."""
    df = read_table(table)
    show = [
        "temperature",
        "top_k_label",
        "rng",
        "seeding",
        "batch_size",
        "identical_across_runs",
        "identical_to_greedy",
        "batch_invariant",
        "n_distinct",
    ]
    if "use_cache" in df.columns and df["use_cache"].nunique() > 1:
        show.insert(5, "use_cache")
    d = df[show].astype(str)
    fig, ax = plt.subplots(figsize=(11, 0.25 * len(d) + 1.2))
    ax.axis("off")
    tab = ax.table(
        cellText=d.to_numpy(), colLabels=[c.replace("_", " ") for c in show], loc="center", cellLoc="center"
    )
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    tab.scale(1, 1.15)
    for i, ok in enumerate(df["as_expected"].astype(str).str.lower() == "true", start=1):
        for j in range(len(show)):
            tab[i, j].set_facecolor("#e6f4e6" if ok else "#f8d7d7")
    ax.set_title(
        "Which settings make generate deterministic? (observed over repeated runs; green = as the book says)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_size_comparison(summary, metrics=None):
    """Bars of each metric (and the joined losses) per model, with ±1 std where available."""
    df = read_table(summary)
    metrics = (
        list(metrics)
        if metrics
        else [m for m in METRICS if f"{m}_mean" in df and df[f"{m}_mean"].notna().any()]
    )
    metrics += [c for c in ("train_loss", "val_loss") if c in df.columns and c not in metrics]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6.5, 2.6 * len(metrics)), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        mean = df[f"{metric}_mean"] if f"{metric}_mean" in df else df[metric]
        std = df[f"{metric}_std"] if f"{metric}_std" in df else None
        ax.bar(range(len(df)), mean, yerr=std, color=[f"C{i}" for i in range(len(df))], capsize=3)
        ax.set_xticks(range(len(df)), df["model"], rotation=30, ha="right", fontsize=8)
        ax.set_title(SHORT_LABELS.get(metric, metric.replace("_", " ")), fontsize=8)
    fig.suptitle("Model sizes under the same prompts, decoding settings and seeds (mean ± std)", fontsize=10)
    fig.tight_layout()
    return fig


def write_all_heatmaps(cells, out_dir, metrics=(*METRICS, "unique_text_fraction"), formats=("png", "pdf")):
    """One heatmap per metric: ``<out_dir>/heatmap_<metric>.png`` and ``.pdf``; returns the paths.

    Metrics without any value (``verbatim_span`` when no training text was given) are skipped.
    """
    df = read_table(cells)
    written = []
    for metric in metrics:
        col = metric if metric in df.columns else f"{metric}_mean"
        if col in df.columns and df[col].notna().any():
            paths = [Path(out_dir) / f"heatmap_{metric}.{fmt}" for fmt in formats]
            written += save_figure(plot_sweep_heatmap(df, metric), paths)
    return written


def plot_losses(history: pd.DataFrame, title: str = "Training and validation loss"):
    """Loss against epochs (bottom axis) and tokens seen (top axis), as the book plots it.

    ``history`` has the columns of ``gptlab.study.runs.history_frame``. Evaluations made
    after a restore (``run == "resume"``) are drawn after a dashed line.
    """
    num_epochs = int(history["epoch"].max())
    epochs_seen = np.linspace(0, num_epochs, len(history))  # as the book's plot_losses

    fig, ax1 = plt.subplots(figsize=(6.5, 3.8))
    ax1.plot(epochs_seen, history["train_loss"], label="Training loss")
    ax1.plot(epochs_seen, history["val_loss"], linestyle="-.", label="Validation loss")
    resumed = history[history["run"] == "resume"]
    if len(resumed):
        boundary = int(resumed["epoch"].min()) - 1  # restores happen at epoch ends
        ax1.axvline(boundary, color="gray", linestyle="--", linewidth=1)
        ax1.annotate(
            "restored from checkpoint",
            (boundary, ax1.get_ylim()[1]),
            xytext=(-4, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=8,
            color="gray",
        )
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()  # a second x-axis for tokens seen, aligned with the first
    ax2.plot(history["tokens_seen"], history["train_loss"], alpha=0)
    ax2.set_xlabel("Tokens seen")
    ax1.set_title(title, fontsize=10, pad=28)
    fig.tight_layout()
    return fig


def plot_model_losses(losses: pd.DataFrame, title: str = "Loss on the corpus (exercise 5.5)"):
    """Bars of train and validation loss per model, values printed on the bars."""
    table = losses.pivot(index="model", columns="split", values="loss").reindex(columns=["train", "val"])
    table = table.reindex(pd.unique(losses["model"]))  # keep the order of the table
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(table) + 1.5), 3.5))
    x = np.arange(len(table))
    width = 0.38
    for i, (split, label) in enumerate((("train", "training"), ("val", "validation"))):
        bars = ax.bar(x + (i - 0.5) * width, table[split], width, label=f"{label} loss")
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(x, table.index)
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig
