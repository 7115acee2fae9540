"""Loss figures: the pretraining curves (section 5.2, exercise 5.4) and the losses of exercise 5.5."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ..losses import BOOK_LOSSES
from .style import LOSS_LABEL, MIN_FONT_SIZE, outer_labels, panel_grid, styled, suptitle

SPLIT_LABELS = {"train": "training", "val": "validation"}


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


@styled
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
    fig, axes, ncols = panel_grid(len(table.columns), panel, extra=(0.6, 0.4), sharey=True)
    for ax, split in zip(axes, table.columns, strict=True):
        _loss_panel(ax, table[split], split, colours)
    shown = list(table.to_numpy(dtype=float).ravel())
    shown += [BOOK_LOSSES[s][split] for s in map(book_size, table.index) if s for split in table.columns]
    axes[0].set_ylim(*_padded_limits(shown))
    outer_labels(fig, axes, ncols, "model", LOSS_LABEL, each_x=True)
    suptitle(fig, title)
    if any(book_size(m) for m in table.index):
        handle = Line2D([], [], color="black", lw=2.5)
        fig.legend([handle], ["the book's value for OpenAI's weights"], loc="outside lower center")
    return fig


# --- pretraining ---------------------------------------------------------------------------------


@styled
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
