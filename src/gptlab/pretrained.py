"""Exercise 5.5 lives in :mod:`gptlab.experiments.losses`; this name keeps existing imports working."""

from .experiments.common import load_model, load_models  # noqa: F401
from .experiments.losses import (  # noqa: F401
    COLUMNS,
    evaluate_losses,
    wide_losses,
    write_losses_csv,
)
