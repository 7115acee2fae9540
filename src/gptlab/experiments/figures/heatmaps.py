"""Figures of exercise 5.2: one heatmap per metric, temperature × top-k, one panel per model."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from ...io import save_figure
from ..common import read_table, top_k_order
from ..metrics import METRICS
from .style import outer_labels, panel_grid, styled, suptitle

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


def _temperature_label(t) -> str:
    return "0 (greedy)" if t == 0 else f"{t:g}"


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


@styled
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
    fig, axes, ncols = panel_grid(len(grids), panel, extra=(1.6, 0.6), sharex=True, sharey=True)
    fmt = _cell_format(metric, (low, high))
    for ax, (model, grid) in zip(axes, grids.items(), strict=True):
        image = _draw_heatmap(ax, grid, cmap, norm, fmt)
        ax.set_title(model)
    outer_labels(fig, axes, ncols, "top-k (all = no top-k filtering)", "temperature T")
    title = f"{label} ({direction})" if direction else label
    if constant:
        suptitle(fig, f"{title}\nmean over prompts and seeds; every cell is {fmt.format(low)}")
    else:
        suptitle(fig, f"{title}\nmean over prompts and seeds")
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
