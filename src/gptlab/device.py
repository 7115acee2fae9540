"""Device and thread selection."""

from __future__ import annotations

import torch


def select_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given (e.g. "cpu", "cuda:1"), else cuda, then mps, then cpu."""
    if preferred and preferred != "auto":
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={preferred!r} requested but CUDA is not available; use 'auto' or 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={preferred!r} requested but MPS is not available; use 'auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work (Snakemake's ``threads``)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1")
        torch.set_num_threads(threads)
