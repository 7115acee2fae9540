"""Decoding experiments of chapter 5 as data: exercises 5.1, 5.2, 5.3 and 5.6.

Each module computes its tables from plain arguments (models as ``{name: GPTModel}``,
a tokenizer, prompts, seeds) and its ``write_*`` function writes tidy CSV with a
``.meta.json`` sidecar, atomically:

- :mod:`.pizza` (5.1): the book's pizza counts, the exact probability, binomial
  intervals, a fine temperature sweep, and " pizza" under real models;
- :mod:`.sweep` (5.2): temperature × top-k grid, per-cell aggregates, recommended settings;
- :mod:`.determinism` (5.3): which settings make ``generate`` deterministic, by running them;
- :mod:`.sizes` (5.6): models of different sizes on the same prompts, settings and seeds;
- :mod:`.metrics`: diversity, repetition, log-probability and memorisation of one text;
- :mod:`.figures`: the figures of all of the above (PNG and PDF).
"""

from .determinism import determinism_audit, write_determinism
from .metrics import VerbatimIndex, distinct_n, repetition_rate, text_metrics
from .pizza import (
    book_reproduction,
    clopper_pearson_interval,
    next_token_probabilities,
    temperature_sweep,
    wilson_interval,
    write_next_token_probabilities,
    write_pizza_book,
    write_pizza_sweep,
)
from .sizes import check_book_reference, compare_sizes, write_sizes
from .sweep import aggregate_cells, recommend_settings, run_generations, write_sweep

__all__ = [
    "VerbatimIndex",
    "aggregate_cells",
    "book_reproduction",
    "check_book_reference",
    "clopper_pearson_interval",
    "compare_sizes",
    "determinism_audit",
    "distinct_n",
    "next_token_probabilities",
    "recommend_settings",
    "repetition_rate",
    "run_generations",
    "temperature_sweep",
    "text_metrics",
    "wilson_interval",
    "write_determinism",
    "write_next_token_probabilities",
    "write_pizza_book",
    "write_pizza_sweep",
    "write_sizes",
    "write_sweep",
]
