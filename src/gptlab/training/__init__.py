"""Training the book's GPT: the loop, checkpoints, the pipeline's ``pretrain`` and the book's run.

- :mod:`.loop`: ``train_model_simple`` (the book's function) and ``train_model`` (the same loop driven
  by a ``TrainState``: resumable mid-epoch, stops cleanly on SIGTERM);
- :mod:`.checkpoint`: checkpoints that resume exactly, each carrying the digest of its content;
- :mod:`.config`: ``TrainConfig``, every training and data setting of a run, the book's by default;
- :mod:`.pretrain`: the chapter's setup with intermediate checkpoints and exact or book-style resume;
- :mod:`.book`: ``python -m gptlab.book``, the book's run compared with its printed numbers.
"""

from .config import TrainConfig
from .loop import (
    NonFiniteLossError,
    TrainingInterrupted,
    TrainState,
    generate_and_print_sample,
    stop_on_signals,
    train_model,
    train_model_simple,
)

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainState",
    "TrainingInterrupted",
    "generate_and_print_sample",
    "stop_on_signals",
    "train_model",
    "train_model_simple",
]
