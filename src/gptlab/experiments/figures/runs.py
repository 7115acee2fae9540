"""The training study's figure: each variant's losses over its seeds, and each run's final validation loss."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ...io import save_figure
from ..common import read_table
from ..training_study import book_curve, book_is_typical, seed_spread
from .style import LOSS_LABEL, MAX_WIDTH, styled, suptitle

BAND = "band: lowest to highest seed"


def _curves(summary: pd.DataFrame, histories) -> pd.DataFrame:
    """Every evaluation of every run, with its variant and its position in epochs (tokens seen divided
    by its variant's tokens per epoch)."""
    history = pd.concat([read_table(h) for h in histories], ignore_index=True)
    runs = summary.set_index("run")
    per_epoch = (runs["tokens_seen"] / runs["epochs"]).groupby(runs["variant"]).mean()
    history["variant"] = history["run"].map(runs["variant"])
    history["epochs_seen"] = history["tokens_seen"] / history["variant"].map(per_epoch)
    return history.dropna(subset=["variant"])


def _draw_variant(ax, curve: pd.DataFrame, variant: str, colour: str, zorder: float) -> None:
    """Mean validation (solid) and training (dashed, lighter) loss over the seeds, each in a min–max band."""
    by_step = curve.groupby("global_step").agg(
        x=("epochs_seen", "mean"),
        val=("val_loss", "mean"),
        val_lo=("val_loss", "min"),
        val_hi=("val_loss", "max"),
        train=("train_loss", "mean"),
        train_lo=("train_loss", "min"),
        train_hi=("train_loss", "max"),
    )
    ax.fill_between(by_step["x"], by_step["val_lo"], by_step["val_hi"], color=colour, alpha=0.22, lw=0)
    ax.fill_between(by_step["x"], by_step["train_lo"], by_step["train_hi"], color=colour, alpha=0.1, lw=0)
    ax.plot(by_step["x"], by_step["val"], color=colour, lw=1.8, gid=f"{variant}:val", zorder=zorder)
    lines = {"lw": 1.2, "ls": "--", "alpha": 0.6, "zorder": zorder}
    ax.plot(by_step["x"], by_step["train"], color=colour, gid=f"{variant}:train", **lines)


def _draw_book(ax, curves: pd.DataFrame, baseline: str) -> None:
    """The book's printed losses, at the positions of the baseline's evaluations of the same steps."""
    where = curves.loc[curves["variant"] == baseline].groupby("global_step")["epochs_seen"].mean()
    book = book_curve()
    book = book.assign(x=book["global_step"].map(where)).dropna(subset=["x"])
    kw = {"color": "black", "ls": "none", "zorder": 4}
    ax.plot(book["x"], book["val_loss"], marker="x", ms=5, gid="printed:val", **kw)
    ax.plot(book["x"], book["train_loss"], marker="+", ms=6, alpha=0.6, gid="printed:train", **kw)


def _draw_finals(ax, summary: pd.DataFrame, colours: dict, confidence: float) -> None:
    """Each run's final validation loss as a dot; the variant's mean with its t-interval beside them."""
    spread = seed_spread(summary, "final_val_loss", confidence).set_index("variant")
    for i, variant in enumerate(colours):
        values = summary.loc[summary["variant"] == variant, "final_val_loss"].to_numpy(dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i - 0.1 + jitter, values, s=18, color=colours[variant], alpha=0.8, zorder=3)
        row = spread.loc[variant]
        error = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
        error = None if np.isnan(error[0][0]) else error
        ax.errorbar(i + 0.22, row["mean"], yerr=error, fmt="o", color=colours[variant], ms=5, capsize=3)
    ax.set_xticks(range(len(colours)), list(colours), rotation=20 if len(colours) > 3 else 0)
    ax.set_xlim(-0.6, len(colours) - 0.4)
    ax.set_title("final validation loss per run")
    ax.grid(axis="y", color="0.92", zorder=0)


def _legend(fig, summary: pd.DataFrame, colours: dict, book: float | None, confidence: float) -> None:
    counts = summary.groupby("variant", sort=False).size()
    handles = [Line2D([], [], color=c, lw=1.8) for c in colours.values()]
    labels = [f"{v} ({counts[v]} seed{'s' if counts[v] > 1 else ''})" for v in colours]
    handles += [Line2D([], [], color="0.3", lw=1.8), Line2D([], [], color="0.3", lw=1.2, ls="--", alpha=0.6)]
    labels += ["validation loss, mean over seeds", "training loss, mean over seeds"]
    handles += [Patch(color="0.3", alpha=0.25, lw=0), Line2D([], [], color="0.3", marker="o", ls="none")]
    labels += [BAND, f"mean and {confidence:.0%} t-interval (right)"]
    if book is not None:
        handles += [Line2D([], [], color="black", marker="x", ls=":", lw=1)]
        labels += [f"the book's printed losses (final validation {book:.3f})"]
    fig.legend(handles, labels, loc="outside lower center", ncols=3)


@styled
def training_study_figure(summary, histories, baseline: str | None = None, confidence: float = 0.95):
    """The study as a figure: the losses of each variant against epochs (left) and each run's final
    validation loss (right); the book's printed losses marked only when the baseline has its settings.

    ``baseline`` defaults to the summary's first variant
    (:func:`~gptlab.experiments.training_study.summarize_runs` puts the baseline first).
    """
    summary = read_table(summary)
    baseline = baseline or summary["variant"].iloc[0]
    colours = {v: f"C{i}" for i, v in enumerate(pd.unique(summary["variant"]))}
    curves = _curves(summary, histories)
    fig, (ax, finals) = plt.subplots(
        1, 2, figsize=(MAX_WIDTH, 4.9), width_ratios=[2.3, 1], layout="constrained"
    )
    for variant, colour in colours.items():
        zorder = 3 if variant == baseline else 2  # the baseline on top
        _draw_variant(ax, curves.loc[curves["variant"] == variant], variant, colour, zorder)
    _draw_finals(finals, summary, colours, confidence)
    typical = book_is_typical(summary, baseline, confidence=confidence)
    book = typical["book_value"] if typical["comparable"] else None
    if book is not None:
        _draw_book(ax, curves, baseline)
        finals.axhline(book, color="black", ls=":", lw=1, zorder=2)
    base = summary.loc[summary["variant"] == baseline]
    per_epoch = float((base["tokens_seen"] / base["epochs"]).mean())
    top = ax.secondary_xaxis("top", functions=(lambda e: e * per_epoch, lambda t: t / per_epoch))
    top.set_xlabel(f"tokens seen ({baseline})")
    ax.set_xlabel("epochs")
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(color="0.92", zorder=0)
    finals.set_ylabel("final validation loss")
    _legend(fig, summary, colours, book, confidence)
    others = len(colours) - 1
    title = f"Training study: {baseline}" + (
        f" and {others} variant{'s' if others > 1 else ''}" if others else ""
    )
    seeds = sorted(set(summary["seed"]))
    title += f", seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    if book is None:
        title += "\n(the baseline does not have the book's settings: its printed losses are not shown)"
    suptitle(fig, title)
    return fig


def plot_training_study(
    summary_csv, histories, png, pdf, baseline: str | None = None, confidence: float = 0.95
):
    """Draw :func:`training_study_figure` and save it as ``png`` and ``pdf``; returns the paths written."""
    return save_figure(training_study_figure(summary_csv, histories, baseline, confidence), [png, pdf])
