"""Figures of exercise 5.1: the toy distributions, the "pizza" sweep, next-token probabilities."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter

from ...generation import TOY_NEXT_TOKEN_LOGITS, TOY_VOCAB
from ..common import read_table
from ..pizza import BOOK_TEMPERATURES, exact_probabilities
from .style import outer_labels, panel_grid, styled, suptitle

# --- 5.1 -----------------------------------------------------------------------------------------


@styled
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


@styled
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


@styled
def plot_next_token_probability(table):
    """Probability of the target token after each prompt, per model, across temperatures (log y).

    One panel per prompt; the dashed line is the uniform probability 1 / vocabulary size, which every
    token approaches as the temperature grows.
    """
    df = read_table(table)
    prompts = list(dict.fromkeys(df["prompt"]))
    target = df["target"].iloc[0]
    fig, axes, ncols = panel_grid(len(prompts), (4.2 if len(prompts) > 1 else 6.5, 3.4), sharey=True)
    for ax, prompt in zip(axes, prompts, strict=True):
        _next_token_panel(ax, df[df["prompt"] == prompt])
        if len(prompts) > 1:
            ax.set_title(f"after {prompt!r}")
    question = f"Probability that {target!r} is the next token"
    if len(prompts) > 1:
        suptitle(fig, question)
    else:
        axes[0].set_title(f"{question} after {prompts[0]!r}")
    outer_labels(fig, axes, ncols, "temperature T", "probability (log scale)")
    return fig
