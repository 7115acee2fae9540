"""What every figure shares: the size a report shows it at, fonts, panel grids, titles."""

from __future__ import annotations

import functools
import math
import textwrap

import matplotlib.pyplot as plt

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
LOSS_LABEL = "cross-entropy loss (nats per token)"


def styled(plot):
    """Draw a figure up under :data:`STYLE`; tick labels keep its sizes when drawn later."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            fig = plot(*args, **kwargs)
        for ax in fig.axes:
            ax.tick_params(which="both", labelsize=STYLE["xtick.labelsize"])
        return fig

    return wrapper


def panel_grid(n, panel, extra=(0.0, 0.0), max_cols=3, **kwargs):
    """A grid of ``n`` panels of ``panel`` = (width, height) inches, at most ``max_cols`` wide, none empty."""
    ncols = n if n <= max_cols else (2 if n == 4 else max_cols)
    nrows = math.ceil(n / ncols)
    size = (min(MAX_WIDTH, panel[0] * ncols + extra[0]), panel[1] * nrows + extra[1])
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained", **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n], ncols


def outer_labels(fig, axes, ncols, xlabel, ylabel, each_x=False):
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


def suptitle(fig, text: str):
    """The figure's title, each line wrapped to the figure's width (about 10 characters an inch)."""
    width = max(20, int(fig.get_size_inches()[0] * 10))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")))
