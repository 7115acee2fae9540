"""The figure of exercise 5.6: the GPT-2 sizes compared under one grid of settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ..common import read_table
from .style import LOSS_LABEL, panel_grid, styled, suptitle

SHORT_LABELS = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "repetition_rate": "repetition rate (4-grams)",
    "mean_logprob": "mean log-prob / token",
    "verbatim_span": "longest copied span (tokens)",
    "train_loss": "training",
    "val_loss": "validation",
}


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


@styled
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
    fig, axes, ncols = panel_grid(len(panels), (4.1 if len(panels) != 3 else 2.9, 2.9), extra=(0.3, 0.7))
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
        suptitle(
            fig, f"{df['model'].iloc[0]}, the only model configured: nothing to compare (mean ± std, {n})"
        )
    else:
        suptitle(fig, f"Model sizes under the same prompts, settings and seeds (mean ± std, {n})")
        handles = [
            Line2D([], [], ls="", marker="o", color=c, label=_model_label(df, m)) for m, c in colours.items()
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4))
    return fig
