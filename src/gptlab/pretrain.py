"""``pretrain`` lives in :mod:`gptlab.training.pretrain`; this name keeps existing imports working."""

from .training.config import TrainConfig  # noqa: F401
from .training.pretrain import RESULTS_VERSION, intermediate_checkpoint, pretrain, settings_key  # noqa: F401
