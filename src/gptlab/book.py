"""``python -m gptlab.book``: the book's run compared with its printed numbers.

The code lives in :mod:`gptlab.training.book`; this name keeps the command and existing imports working.
"""

import sys

from .training.book import (  # noqa: F401
    BOOK_EPOCH_SAMPLES,
    BOOK_INITIAL_LOSSES,
    BOOK_LOSS_LINES,
    BOOK_MODEL_CONFIG,
    BOOK_SETTINGS,
    INITIAL_LOSS_TOLERANCE,
    compare,
    initial_losses,
    main,
)

if __name__ == "__main__":
    sys.exit(main())
