"""Figures of the experiments (matplotlib, Agg backend; PNG and PDF), one module per exercise.

Each ``plot_*`` function takes the DataFrame an experiment wrote (or reads it
back from CSV) and returns a figure; :func:`gptlab.io.save_figure` writes it to
one or more files (the format from each suffix), atomically.
:func:`write_all_heatmaps` does both for every metric of 5.2.

- :mod:`.style`: what every figure shares (size, fonts, panel grids, titles);
- :mod:`.pizza` (5.1), :mod:`.heatmaps` (5.2), :mod:`.determinism` (5.3),
  :mod:`.losses` (the pretraining curves and 5.5), :mod:`.sizes` (5.6).

The reports show the PNGs about 900 pixels wide. A figure is therefore at most
:data:`MAX_WIDTH` inches wide and no text is smaller than :data:`MIN_FONT_SIZE`
points, so that text reads at that size as it would in print; every figure is
laid out by matplotlib's constrained layout, which keeps labels inside it.
"""

import matplotlib

matplotlib.use("Agg")  # files only, no display: set before any pyplot import below

from .determinism import plot_determinism  # noqa: E402
from .heatmaps import (  # noqa: E402
    HEATMAP_SCALES,
    METRIC_LABELS,
    heatmap_grids,
    heatmap_limits,
    plot_sweep_heatmap,
    write_all_heatmaps,
)
from .losses import book_size, plot_losses, plot_model_losses  # noqa: E402
from .pizza import plot_next_token_probability, plot_pizza_sweep, plot_toy_distributions  # noqa: E402
from .sizes import plot_size_comparison  # noqa: E402
from .style import MAX_WIDTH, MIN_FONT_SIZE  # noqa: E402

__all__ = [
    "HEATMAP_SCALES",
    "MAX_WIDTH",
    "METRIC_LABELS",
    "MIN_FONT_SIZE",
    "book_size",
    "heatmap_grids",
    "heatmap_limits",
    "plot_determinism",
    "plot_losses",
    "plot_model_losses",
    "plot_next_token_probability",
    "plot_pizza_sweep",
    "plot_size_comparison",
    "plot_sweep_heatmap",
    "plot_toy_distributions",
    "write_all_heatmaps",
]
