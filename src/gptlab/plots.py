"""Loss curves over epochs and tokens seen (the book's figure 5.12), with the resume point marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_write  # noqa: E402


def save_figure(fig, paths) -> list[Path]:
    """Save ``fig`` to each path (format from the suffix), atomically, then close it."""
    written = []
    for path in map(Path, paths):
        fmt = path.suffix.lstrip(".")
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=150))
        written.append(path)
    plt.close(fig)
    return written


def plot_losses(history: pd.DataFrame, title: str = "Training and validation loss"):
    """Loss against epochs (bottom axis) and tokens seen (top axis), as the book plots it.

    ``history`` has the columns of ``study.history_frame``. Evaluations made
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
