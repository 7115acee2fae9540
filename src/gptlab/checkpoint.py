"""Checkpoints live in :mod:`gptlab.training.checkpoint`; this name keeps existing imports working."""

from .training.checkpoint import (  # noqa: F401
    DIGEST,
    FORMAT,
    VERSION,
    CheckpointError,
    capture_rng_state,
    content_digest,
    integrity,
    load_checkpoint,
    load_into,
    model_from_checkpoint,
    restore_rng_state,
    save_book_checkpoint,
    save_checkpoint,
)
