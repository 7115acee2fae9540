"""Experiments of chapter 5 as data: exercises 5.1, 5.2, 5.3, 5.5 and 5.6.

Each module computes its tables from plain arguments (models as ``{name: GPTModel}``,
a tokenizer, a grid of settings, seeds) and its ``write_*`` function writes tidy CSV
with a ``.meta.json`` sidecar, atomically:

- :mod:`.pizza` (5.1): the book's pizza counts, the exact probability, binomial
  intervals, a fine temperature sweep, and " pizza" under real models;
- :mod:`.sweep` (5.2): temperature × top-k grid (:class:`SweepGrid`), per-cell aggregates,
  recommended settings;
- :mod:`.determinism` (5.3): which settings make ``generate`` deterministic, by running
  them (:class:`DeterminismGrid`);
- :mod:`.losses` (5.5): training and validation loss of pretrained models, the book's way;
- :mod:`.sizes` (5.6): models of different sizes on the same prompts, settings and seeds
  (:class:`SizesGrid`);
- :mod:`.sampling`: sampling a grid with every model and scoring each text (5.2 and 5.6);
- :mod:`.metrics`: diversity, repetition, log-probability and memorisation of one text;
- :mod:`.common`: loading and describing models, top-k labels, reading tables, metric summaries;
- :mod:`.figures`: the figures of all of the above (saved with :func:`gptlab.io.save_figure`).
"""

from ..lazy import lazy_exports

# Each name is imported on first use, so that a job that uses one module (a figure, a report's
# constants) does not import them all, torch included.
_EXPORTS = {
    ".common": (
        "describe_models",
        "load_model",
        "load_models",
        "top_k_label",
        "top_k_order",
    ),
    ".determinism": (
        "DeterminismGrid",
        "determinism_audit",
        "write_determinism",
    ),
    ".metrics": (
        "METRIC_NAMES",
        "METRICS",
        "VerbatimIndex",
        "distinct_n",
        "repetition_rate",
        "text_metrics",
    ),
    ".pizza": (
        "BOOK_PIZZA_COUNTS",
        "book_reproduction",
        "clopper_pearson_interval",
        "next_token_probabilities",
        "temperature_sweep",
        "wilson_interval",
        "write_next_token_probabilities",
        "write_pizza_book",
        "write_pizza_sweep",
    ),
    ".sampling": (
        "SamplingGrid",
        "run_generations",
    ),
    ".sizes": (
        "SizesGrid",
        "check_book_reference",
        "compare_sizes",
        "write_sizes",
    ),
    ".sweep": (
        "SweepGrid",
        "aggregate_cells",
        "recommend_settings",
        "write_sweep",
    ),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
