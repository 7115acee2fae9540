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

from ...lazy import lazy_exports

matplotlib.use("Agg")  # files only, no display: set before any figure module imports pyplot

# Each name is imported on first use: a job that draws one figure imports its module only
# (only the 5.1 figures need torch).
_EXPORTS = {
    ".determinism": ("plot_determinism",),
    ".heatmaps": (
        "HEATMAP_SCALES",
        "METRIC_LABELS",
        "heatmap_grids",
        "heatmap_limits",
        "plot_sweep_heatmap",
        "write_all_heatmaps",
    ),
    ".losses": (
        "book_size",
        "plot_losses",
        "plot_model_losses",
    ),
    ".pizza": (
        "plot_next_token_probability",
        "plot_pizza_sweep",
        "plot_toy_distributions",
    ),
    ".sizes": ("plot_size_comparison",),
    ".runs": ("plot_training_study", "training_study_figure"),
    ".style": (
        "MAX_WIDTH",
        "MIN_FONT_SIZE",
    ),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
