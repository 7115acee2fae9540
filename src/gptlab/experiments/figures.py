"""Figures of the experiments (matplotlib, Agg backend; PNG and PDF): decoding, losses, sizes.

Each ``plot_*`` function takes the DataFrame an experiment wrote (or reads it
back from CSV) and returns a figure; :func:`gptlab.io.save_figure` writes it to
one or more files (the format from each suffix), atomically.
:func:`write_all_heatmaps` does both for every metric of 5.2.

The reports show the PNGs about 900 pixels wide. A figure is therefore at most
:data:`MAX_WIDTH` inches wide and no text is smaller than :data:`MIN_FONT_SIZE`
points, so that text reads at that size as it would in print; every figure is
laid out by matplotlib's constrained layout, which keeps labels inside it.
"""

from __future__ import annotations

import functools
import math
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogFormatterSciNotation,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from ..generation import TOY_NEXT_TOKEN_LOGITS, TOY_VOCAB  # noqa: E402
from ..io import save_figure  # noqa: E402
from .common import read_table, top_k_order  # noqa: E402
from .losses import BOOK_LOSSES  # noqa: E402
from .metrics import METRICS  # noqa: E402
from .pizza import BOOK_TEMPERATURES, exact_probabilities  # noqa: E402

MAX_WIDTH = 9.0
"""Widest figure, in inches (1350 pixels at the 150 dpi of :func:`gptlab.io.save_figure`)."""
MIN_FONT_SIZE = 8.0
"""Smallest text, in points."""
FONT_SIZE = 9.0
STYLE = {
    "font.size": FONT_SIZE,
    "axes.titlesize": 10,
    "axes.labelsize": FONT_SIZE,
    "legend.fontsize": 8.5,
    "legend.title_fontsize": 8.5,
    "figure.titlesize": 11,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
}
"""Font sizes of every figure (applied while it is drawn up; global settings are left alone)."""

CELL_FONT_SIZE = 8.5

# label, direction, colour-scale limits (None: from the data), unit (the colour bar), cell format
HEATMAP_SCALES = {
    "distinct_1": ("distinct-1: unique tokens / tokens", "higher = more diverse", (0.0, 1.0), "share"),
    "distinct_2": ("distinct-2: unique bigrams / bigrams", "higher = more diverse", (0.0, 1.0), "share"),
    "repetition_rate": (
        "repetition rate: share of 4-grams repeated",
        "higher = more repetitive",
        (0.0, 1.0),
        "share",
    ),
    "mean_logprob": (
        "mean log-probability per token under the untempered model",
        "higher = more likely",
        (None, None),
        "nats per token",
    ),
    "verbatim_span": (
        "longest span copied from the training text",
        "higher = more memorised",
        (0.0, None),
        "tokens",
    ),
    "seed_disagreement": (
        "seed disagreement: share of seed pairs giving different texts",
        "0 = the seed does not matter; 1 = every seed differs",
        (0.0, 1.0),
        "share of seed pairs",
    ),
    "unique_text_fraction": (
        "distinct texts per seed",
        "1 = every seed differs; 1 / seeds = the seed does not matter",
        (0.0, 1.0),
        "distinct texts / seeds",
    ),
}
METRIC_LABELS = {m: f"{label} ({direction})" for m, (label, direction, _, _) in HEATMAP_SCALES.items()}
SHORT_LABELS = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "repetition_rate": "repetition rate (4-grams)",
    "mean_logprob": "mean log-prob / token",
    "verbatim_span": "longest copied span (tokens)",
    "train_loss": "training",
    "val_loss": "validation",
}
SPLIT_LABELS = {"train": "training", "val": "validation"}
LOSS_LABEL = "cross-entropy loss (nats per token)"


def _styled(plot):
    """Draw a figure up under :data:`STYLE`; tick labels keep its sizes when drawn later."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            fig = plot(*args, **kwargs)
        for ax in fig.axes:
            ax.tick_params(which="both", labelsize=STYLE["xtick.labelsize"])
        return fig

    return wrapper


def _panels(n, panel, extra=(0.0, 0.0), max_cols=3, **kwargs):
    """A grid of ``n`` panels of ``panel`` = (width, height) inches, at most ``max_cols`` wide, none empty."""
    ncols = n if n <= max_cols else (2 if n == 4 else max_cols)
    nrows = math.ceil(n / ncols)
    size = (min(MAX_WIDTH, panel[0] * ncols + extra[0]), panel[1] * nrows + extra[1])
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained", **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n], ncols


def _outer_labels(fig, axes, ncols, xlabel, ylabel, each_x=False):
    """Tick labels on the outer panels, and one x and one y label for the whole grid.

    ``each_x`` labels the x-axis of every bottom panel instead (for figures with a legend below).
    """
    bottom = [ax for i, ax in enumerate(axes) if i + ncols >= len(axes)]  # no panel below these
    for ax in bottom:
        ax.xaxis.set_tick_params(labelbottom=True)
    if len(axes) == 1 or each_x:
        for ax in bottom:
            ax.set_xlabel(xlabel)
    else:
        fig.supxlabel(xlabel, fontsize=FONT_SIZE)
    if len(axes) == 1:
        axes[0].set_ylabel(ylabel)
    elif ylabel:
        fig.supylabel(ylabel, fontsize=FONT_SIZE)


def _suptitle(fig, text: str):
    """The figure's title, each line wrapped to the figure's width (about 10 characters an inch)."""
    width = max(20, int(fig.get_size_inches()[0] * 10))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")))


def _temperature_label(t) -> str:
    return "0 (greedy)" if t == 0 else f"{t:g}"


# --- 5.1 -----------------------------------------------------------------------------------------


@_styled
def plot_toy_distributions(temperatures=BOOK_TEMPERATURES):
    """The toy vocabulary's next-token probabilities at several temperatures (book figure 5.14)."""
    logits = torch.tensor(TOY_NEXT_TOKEN_LOGITS)
    words = list(TOY_VOCAB)
    x = np.arange(len(words))
    width = 0.8 / len(temperatures)
    fig, ax = plt.subplots(figsize=(6.5, 3.6), layout="constrained")
    for i, t in enumerate(temperatures):
        probs = exact_probabilities(logits, t).numpy()
        ax.bar(x + (i - (len(temperatures) - 1) / 2) * width, probs, width, label=f"T = {t:g}")
    ax.set_xticks(x, words, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_xlabel("next token (the book's toy vocabulary)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.05)
    ax.set_title("Next-token probabilities of the toy vocabulary, scaled by temperature T")
    ax.legend(title="temperature")
    return fig


@_styled
def plot_pizza_sweep(sweep, token="pizza"):
    """Exact ``softmax(logits / T)[token]`` against the sampled frequency with its confidence interval."""
    df = read_table(sweep)
    d = df[df["token"] == token].sort_values("temperature")
    if d.empty:
        raise ValueError(f"token {token!r} is not in the sweep; it has {sorted(df['token'].unique())}")
    n, conf, seed = int(d["num_draws"].iloc[0]), float(d["confidence"].iloc[0]), int(d["seed"].iloc[0])
    interval = str(d["interval"].iloc[0]).replace("_", "-").title()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
    ax.fill_between(
        d["temperature"],
        d["ci_low"],
        d["ci_high"],
        color="C1",
        alpha=0.25,
        label=f"{conf:.0%} {interval} interval of the sampled frequency",
    )
    ax.plot(
        d["temperature"],
        d["empirical_prob"],
        "o",
        ms=3.5,
        color="C1",
        clip_on=False,
        label=f"sampled: {n} draws, seed {seed}",
    )
    ax.plot(d["temperature"], d["exact_prob"], "-", color="C0", label="exact: softmax(logits / T)")
    for t in BOOK_TEMPERATURES:
        ax.axvline(t, color="gray", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("temperature T (log scale; dotted lines: the book's 0.1, 1 and 5)")
    ax.set_ylabel(f"probability of sampling '{token}'")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Probability of sampling '{token}': exact vs {n} draws")
    ax.legend(loc="upper left")
    return fig


def _minor_log_label(value, _pos) -> str:
    """Minor ticks of a log axis as m×10^e (only 2 and 5 are placed)."""
    exponent = math.floor(math.log10(value))
    mantissa = round(value / 10**exponent)
    return f"${mantissa}\\times10^{{{exponent}}}$"


def _log_y_ticks(ax):
    """Decades labelled; within less than two decades also 2 and 5 of each, so some label is always shown."""
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_major_formatter(LogFormatterSciNotation())
    if math.log10(hi / lo) < 2:
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _next_token_panel(ax, d: pd.DataFrame):
    for model, m in d.groupby("model", sort=False):
        ax.plot(
            m["temperature"],
            m["prob"].clip(lower=1e-300),
            "o-",
            ms=3.5,
            label=f"{model} (rank {int(m['rank'].iloc[0]):,})",
        )
    vocab = int(d["vocab_size"].iloc[0]) if "vocab_size" in d else None
    if vocab:
        ax.axhline(1 / vocab, color="gray", lw=0.8, ls="--", label=f"uniform: 1 / {vocab:,}")
    ax.set_yscale("log")
    _log_y_ticks(ax)
    ax.legend(loc="best")


@_styled
def plot_next_token_probability(table):
    """Probability of the target token after each prompt, per model, across temperatures (log y).

    One panel per prompt; the dashed line is the uniform probability 1 / vocabulary size, which every
    token approaches as the temperature grows.
    """
    df = read_table(table)
    prompts = list(dict.fromkeys(df["prompt"]))
    target = df["target"].iloc[0]
    fig, axes, ncols = _panels(len(prompts), (4.2 if len(prompts) > 1 else 6.5, 3.4), sharey=True)
    for ax, prompt in zip(axes, prompts, strict=True):
        _next_token_panel(ax, df[df["prompt"] == prompt])
        if len(prompts) > 1:
            ax.set_title(f"after {prompt!r}")
    question = f"Probability that {target!r} is the next token"
    if len(prompts) > 1:
        _suptitle(fig, question)
    else:
        axes[0].set_title(f"{question} after {prompts[0]!r}")
    _outer_labels(fig, axes, ncols, "temperature T", "probability (log scale)")
    return fig


# --- 5.2 -----------------------------------------------------------------------------------------


def _metric_column(df: pd.DataFrame, metric: str) -> str:
    col = metric if metric in df.columns else f"{metric}_mean"
    if col not in df.columns:
        raise ValueError(f"metric {metric!r} is not in the cell table; choose from {list(METRICS)}")
    return col


def heatmap_grids(cells, metric) -> dict[str, pd.DataFrame]:
    """Model → ``metric`` over temperature (rows) × top-k (columns, "all" last), all on one grid."""
    df = read_table(cells)
    col = _metric_column(df, metric)
    df = df.assign(top_k_label=df["top_k_label"].astype(str))
    temperatures = sorted(df["temperature"].unique())
    top_ks = top_k_order(df["top_k_label"])
    return {
        model: d.pivot(index="temperature", columns="top_k_label", values=col).reindex(
            index=temperatures, columns=top_ks
        )
        for model, d in df.groupby("model", sort=False)
    }


def heatmap_limits(metric: str, grids: dict) -> tuple[float, float]:
    """The colour scale of ``metric``, shared by every model's panel.

    A metric with a natural range (a share: 0 to 1) uses it, so colours mean the same in every figure;
    the others span the values of all panels (a span from 0 for a length).
    """
    low, high = HEATMAP_SCALES.get(metric, ("", "", (None, None), ""))[2]
    values = np.concatenate([g.to_numpy(dtype=float).ravel() for g in grids.values()])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0) if low is None else (low, low if high is None else high)
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else max(high, float(values.max()))
    return low, high


def _cell_format(metric: str, limits) -> str:
    return "{:.2f}" if limits[1] - limits[0] <= 1 and metric != "verbatim_span" else "{:.1f}"


def _draw_heatmap(ax, grid: pd.DataFrame, cmap, norm, fmt):
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, aspect="auto", cmap=cmap, norm=norm)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            r, g, b, _ = cmap(norm(v))
            dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45  # light text on a dark cell
            text, colour = fmt.format(v), "white" if dark else "black"
        else:
            text, colour = "–", "0.35"
        ax.text(j, i, text, ha="center", va="center", fontsize=CELL_FONT_SIZE, color=colour)
    columns = [str(c) for c in grid.columns]
    if "all" in columns and len(columns) > 1:  # "all" is no filtering, not the next k
        ax.axvline(columns.index("all") - 0.5, color="white", lw=2.5)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(grid.index)), [_temperature_label(t) for t in grid.index])
    ax.tick_params(length=0)
    return image


@_styled
def plot_sweep_heatmap(cells, metric):
    """One metric over temperature (rows) × top-k (columns), one panel per model, one colour scale.

    Every panel uses the colour scale of :func:`heatmap_limits`, explained by one colour bar; when every
    cell holds the same value the bar is left out and the title says so. Cells print the mean over
    prompts and seeds.
    """
    grids = heatmap_grids(cells, metric)
    label, direction, _, unit = HEATMAP_SCALES.get(metric, (metric.replace("_", " "), "", None, ""))
    low, high = heatmap_limits(metric, grids)
    constant = low == high
    norm = Normalize(low - 1, high + 1) if constant else Normalize(low, high)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.9")
    shape = next(iter(grids.values())).shape
    panel = (max(2.3, 0.47 * shape[1] + 0.5), 0.34 * shape[0] + 0.9)
    fig, axes, ncols = _panels(len(grids), panel, extra=(1.6, 0.6), sharex=True, sharey=True)
    fmt = _cell_format(metric, (low, high))
    for ax, (model, grid) in zip(axes, grids.items(), strict=True):
        image = _draw_heatmap(ax, grid, cmap, norm, fmt)
        ax.set_title(model)
    _outer_labels(fig, axes, ncols, "top-k (all = no top-k filtering)", "temperature T")
    title = f"{label} ({direction})" if direction else label
    if constant:
        _suptitle(fig, f"{title}\nmean over prompts and seeds; every cell is {fmt.format(low)}")
    else:
        _suptitle(fig, f"{title}\nmean over prompts and seeds")
        fig.colorbar(image, ax=axes, shrink=0.9, label=unit)
    return fig


def write_all_heatmaps(cells, out_dir, metrics=(*METRICS, "seed_disagreement"), formats=("png", "pdf")):
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


# --- 5.3 -----------------------------------------------------------------------------------------


def _bool(series: pd.Series) -> pd.Series:
    """True/False as written by pandas, whether read back as booleans or as text."""
    return series.astype(str).str.lower() == "true"


def _determinism_setting(row, with_cache: bool) -> str:
    rng = "global RNG" if row["rng"] == "global" else "per-row RNG"
    label = f"{rng} · {row['seeding']} seeds · batch {int(row['batch_size'])}"
    if with_cache:
        label += " · cache" if str(row["use_cache"]).lower() == "true" else " · no cache"
    return label


def _determinism_frame(table) -> pd.DataFrame:
    """The audit with the setting of each row as one label and the booleans as booleans."""
    df = read_table(table).copy()
    with_cache = "use_cache" in df.columns and df["use_cache"].nunique() > 1
    df["top_k_label"] = df["top_k_label"].astype(str)
    df["setting"] = [_determinism_setting(row, with_cache) for _, row in df.iterrows()]
    df["possible"] = df["runs"].astype(int) * df["batch_size"].astype(int)
    for col in ("identical_across_runs", "expected_deterministic", "expected_greedy", "as_expected"):
        df[col] = _bool(df[col])
    return df


DETERMINISM_COLOURS = {True: "C0", False: "C1"}  # the book expects deterministic / varying output
DETERMINISM_MARKERS = {True: "o", False: "X"}  # observed: every run the same / runs differed


def _determinism_panel(ax, d: pd.DataFrame, rows: dict):
    y = d["setting"].map(rows).to_numpy()
    ax.hlines(y, 1, d["possible"], color="0.85", lw=5, zorder=1)
    for (expected, observed), g in d.groupby(["expected_deterministic", "identical_across_runs"]):
        ax.scatter(
            g["n_distinct"],
            g["setting"].map(rows),
            marker=DETERMINISM_MARKERS[observed],
            s=45,
            color=DETERMINISM_COLOURS[expected],
            zorder=3,
        )
    wrong = d[~d["as_expected"]]
    ax.scatter(wrong["n_distinct"], wrong["setting"].map(rows), s=160, fc="none", ec="red", lw=1.5, zorder=4)
    ax.set_yticks(list(rows.values()), list(rows))
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", color="0.92", zorder=0)


def _determinism_legend(fig):
    handles = [
        Line2D([], [], color="0.85", lw=5, label="possible: 1 to runs × batch"),
        Line2D([], [], ls="", marker="s", ms=8, color="C0", label="the book: deterministic"),
        Line2D([], [], ls="", marker="s", ms=8, color="C1", label="the book: varies between runs"),
        Line2D([], [], ls="", marker="o", ms=7, color="0.3", label="observed: every run the same"),
        Line2D([], [], ls="", marker="X", ms=7, color="0.3", label="observed: runs differed"),
        Line2D([], [], ls="", marker="o", ms=11, mfc="none", mec="red", label="not as the book says"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)


@_styled
def plot_determinism_table(table):
    """5.3 as a chart: distinct outputs over the repeated runs of every setting, against the book.

    One panel per temperature and top-k. Each row is one way of calling ``generate`` (random-number
    source, seeding, batch size); the dot is the number of distinct token sequences among all rows of
    all runs (the grey bar runs to the most there could be), its colour the book's expectation
    (deterministic or not), its shape what happened (every run the same or not); a red ring marks a
    setting that did not behave as the book says.
    """
    df = _determinism_frame(table)
    order = top_k_order(df["top_k_label"])
    keys = sorted(
        set(zip(df["temperature"], df["top_k_label"], strict=True)), key=lambda k: (k[0], order.index(k[1]))
    )
    rows = {s: i for i, s in enumerate(dict.fromkeys(df["setting"]))}
    fig, axes, ncols = _panels(
        len(keys), (2.3, 0.3 * len(rows) + 0.8), extra=(2.3, 0.9), sharex=True, sharey=True
    )
    for ax, (t, k) in zip(axes, keys, strict=True):
        d = df[(df["temperature"] == t) & (df["top_k_label"] == k)]
        _determinism_panel(ax, d, rows)
        kind = "greedy" if d["expected_greedy"].all() else "sampling"
        ax.set_title(f"T = {t:g}, top-k = {k}: {kind}", fontsize=FONT_SIZE)
    axes[0].set_xlim(0.5, df["possible"].max() + 0.5)
    _outer_labels(fig, axes, ncols, "distinct outputs", "", each_x=True)
    runs = " or ".join(map(str, sorted(df["runs"].astype(int).unique())))
    model = f"model {df['model'].iloc[0]}, " if "model" in df.columns else ""
    _suptitle(fig, f"Which settings make generate deterministic? ({model}{runs} runs per setting)")
    _determinism_legend(fig)
    return fig


# --- 5.5 and 5.6 ---------------------------------------------------------------------------------


def book_size(model: str) -> str | None:
    """The GPT-2 size of :data:`~gptlab.experiments.losses.BOOK_LOSSES` a model name holds ("gpt2-124M")."""
    for size in BOOK_LOSSES:
        if re.search(rf"(?<![0-9A-Za-z]){re.escape(size)}(?![0-9A-Za-z])", str(model)):
            return size
    return None


def _label_point(ax, x, y, text, dy):
    ax.annotate(text, (x, y), xytext=(6, dy), textcoords="offset points", va="center")


def _loss_panel(ax, values: pd.Series, split: str, colours: dict):
    """Measured losses as dots; the book's value as a black bar behind the dot of the same GPT-2 size."""
    x = np.arange(len(values))
    ax.scatter(x, values, s=50, color=[colours[m] for m in values.index], zorder=3)
    for xi, (model, v) in zip(x, values.items(), strict=True):
        size = book_size(model)
        if size is None:
            _label_point(ax, xi + 0.05, v, f"{v:.4f}", 0)
            continue
        book = BOOK_LOSSES[size][split]
        dy = 6 if v >= book else -6  # the higher label goes up, so equal values do not overlap
        ax.hlines(book, xi - 0.22, xi + 0.22, color="black", lw=2.5, zorder=2)
        _label_point(ax, xi + 0.22, v, f"{v:.4f}", dy)
        _label_point(ax, xi + 0.22, book, f"book {book:.4f}", -dy)
    ax.set_xticks(x, values.index, rotation=20 if len(x) > 3 else 0, ha="right" if len(x) > 3 else "center")
    ax.set_xlim(-0.4, len(x) - 0.05)
    ax.set_title(f"{SPLIT_LABELS.get(split, split)} split")
    ax.grid(axis="y", color="0.92", zorder=0)


def _padded_limits(values, pad=0.08) -> tuple[float, float]:
    """The range of non-negative ``values`` with a margin, never below 0."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    return max(0.0, lo - pad * span), hi + pad * span


@_styled
def plot_model_losses(losses: pd.DataFrame, title: str = "Loss on the corpus (exercise 5.5)"):
    """Train and validation loss per model, one panel per split, the book's values marked.

    A dot is a measured loss (its value printed beside it); a black bar is the book's value for OpenAI's
    weights of the same GPT-2 size (:data:`~gptlab.experiments.losses.BOOK_LOSSES`), drawn for every model
    whose name holds that size ("gpt2-124M"). The loss axis spans the values, not 0 to the largest.
    """
    table = losses.pivot(index="model", columns="split", values="loss")
    table = table.reindex(
        index=pd.unique(losses["model"]), columns=[s for s in ("train", "val") if s in table]
    )
    colours = {m: f"C{i}" for i, m in enumerate(table.index)}
    panel = (max(2.6, 1.1 * len(table) + 1.4), 3.6)  # the grid is capped at MAX_WIDTH
    fig, axes, ncols = _panels(len(table.columns), panel, extra=(0.6, 0.4), sharey=True)
    for ax, split in zip(axes, table.columns, strict=True):
        _loss_panel(ax, table[split], split, colours)
    shown = list(table.to_numpy(dtype=float).ravel())
    shown += [BOOK_LOSSES[s][split] for s in map(book_size, table.index) if s for split in table.columns]
    axes[0].set_ylim(*_padded_limits(shown))
    _outer_labels(fig, axes, ncols, "model", LOSS_LABEL, each_x=True)
    _suptitle(fig, title)
    if any(book_size(m) for m in table.index):
        handle = Line2D([], [], color="black", lw=2.5)
        fig.legend([handle], ["the book's value for OpenAI's weights"], loc="outside lower center")
    return fig


SIZE_PANELS = (
    # title, metrics, y label, range the values (and their error bars) lie in
    ("diversity and repetition", ("distinct_1", "distinct_2", "repetition_rate"), "share (0 to 1)", (0, 1)),
    ("likelihood of its own text", ("mean_logprob",), "mean log-prob (nats per token)", (None, 0)),
    ("memorisation", ("verbatim_span",), "longest copied span (tokens)", (0, None)),
    ("loss on the corpus (5.5)", ("train_loss", "val_loss"), LOSS_LABEL, (0, None)),
)


def _size_panels(df: pd.DataFrame, metrics) -> list[tuple]:
    """The panels of :data:`SIZE_PANELS` with the metrics the summary has values for."""

    def has(metric):
        col = f"{metric}_mean" if f"{metric}_mean" in df else metric
        return (metrics is None or metric in metrics) and col in df and df[col].notna().any()

    panels = [(title, [m for m in ms if has(m)], label, rng) for title, ms, label, rng in SIZE_PANELS]
    return [p for p in panels if p[1]]


def _clipped_errors(mean, std, bounds):
    """Error bar lengths below and above ``mean``, cut where ``mean ± std`` leaves ``bounds``."""
    std = np.nan_to_num(np.asarray(std, dtype=float))
    low, high = bounds
    below = np.minimum(std, mean - low) if low is not None else std
    above = np.minimum(std, high - mean) if high is not None else std
    return np.clip(np.vstack([below, above]), 0, None)


def _model_label(df: pd.DataFrame, model: str) -> str:
    """The model's name, with its parameter count where the summary has one."""
    if "parameters" not in df:
        return model
    n = float(df.loc[df["model"] == model, "parameters"].iloc[0]) / 1e6
    return f"{model} ({n:,.0f}M parameters)" if n >= 10 else f"{model} ({n:.1f}M parameters)"


def _sizes_panel(ax, df: pd.DataFrame, metrics, bounds, colours):
    x = np.arange(len(metrics))
    offsets = (np.arange(len(df)) - (len(df) - 1) / 2) * min(0.2, 0.6 / len(df))
    for i, (_, row) in enumerate(df.iterrows()):
        mean = np.array([row.get(f"{m}_mean", row.get(m)) for m in metrics], dtype=float)
        std = [row.get(f"{m}_std", 0.0) for m in metrics]
        ax.errorbar(
            x + offsets[i],
            mean,
            yerr=_clipped_errors(mean, std, bounds),
            fmt="o",
            ms=6,
            capsize=3,
            color=colours[row["model"]],
        )
    ax.set_xticks(x, [SHORT_LABELS.get(m, m) for m in metrics])
    ax.set_xlim(-0.5, len(metrics) - 0.5)
    ax.grid(axis="y", color="0.92")


@_styled
def plot_size_comparison(summary, metrics=None):
    """The 5.6 metrics of each model (mean ± std over its texts) and the joined 5.5 losses.

    Panels group metrics on one scale: the shares (distinct-1, distinct-2, repetition rate, 0 to 1), the
    mean log-probability, the longest copied span, and the losses. Error bars stop at the range a
    quantity can take (a length or a share never below 0). With one model the title says so.
    """
    df = read_table(summary)
    panels = _size_panels(df, list(metrics) if metrics else None)
    if not panels:
        raise ValueError("the summary has no metric with a value to plot")
    colours = {m: f"C{i}" for i, m in enumerate(df["model"])}
    fig, axes, ncols = _panels(len(panels), (4.1 if len(panels) != 3 else 2.9, 2.9), extra=(0.3, 0.7))
    for ax, (title, ms, label, bounds) in zip(axes, panels, strict=True):
        _sizes_panel(ax, df, ms, bounds, colours)
        ax.set_title(title)
        ax.set_ylabel(label)
        if bounds == (0, 1):
            ax.set_ylim(-0.03, 1.03)
        elif ms == ["verbatim_span"]:
            ax.set_ylim(bottom=0)
    n = f"{int(df['n'].iloc[0])} texts per model" if "n" in df else "per model"
    if len(df) == 1:
        _suptitle(
            fig, f"{df['model'].iloc[0]}, the only model configured: nothing to compare (mean ± std, {n})"
        )
    else:
        _suptitle(fig, f"Model sizes under the same prompts, settings and seeds (mean ± std, {n})")
        handles = [
            Line2D([], [], ls="", marker="o", color=c, label=_model_label(df, m)) for m, c in colours.items()
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4))
    return fig


# --- pretraining ---------------------------------------------------------------------------------


@_styled
def plot_losses(history: pd.DataFrame, title: str = "Training and validation loss"):
    """Loss against epochs (bottom axis) and tokens seen (top axis), as the book plots it.

    ``history`` has the columns of ``gptlab.study.runs.history_frame``. Evaluations made
    after a restore (``run == "resume"``) are drawn after a dashed line.
    """
    num_epochs = int(history["epoch"].max())
    epochs_seen = np.linspace(0, num_epochs, len(history))  # as the book's plot_losses

    fig, ax1 = plt.subplots(figsize=(6.5, 3.9), layout="constrained")
    ax1.plot(epochs_seen, history["train_loss"], label="training loss")
    ax1.plot(epochs_seen, history["val_loss"], linestyle="-.", label="validation loss")
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
            fontsize=MIN_FONT_SIZE,
            color="gray",
        )
    ax1.set_xlabel("epochs")
    ax1.set_ylabel(LOSS_LABEL)
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()  # a second x-axis for tokens seen, aligned with the first
    ax2.plot(history["tokens_seen"], history["train_loss"], alpha=0)
    ax2.set_xlabel("tokens seen")
    ax2.set_title(title)
    return fig
