"""Exercise 5.5: training and validation loss of pretrained models on the chapter's corpus.

The procedure is the book's: the chapter's loaders (90/10 split by
characters, ``max_length=stride=256``, batch 2, ``torch.manual_seed(123)``
before building them), the model in eval mode, ``torch.manual_seed(123)``
again right before evaluating, and all batches of both loaders. The seed is
reset for every model, so results do not depend on the order of ``models``.

The book's figures for OpenAI's weights on *The Verdict* (:data:`BOOK_LOSSES`):
124M train 3.7547, val 3.5596; 1558M train 3.3046, val 3.1195.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ..io import atomic_open, write_table
from .common import load_model

# torch, the loaders and the loss are imported by the functions that evaluate: the constants and
# tables below (read by figures and reports) need none of them.

COLUMNS = ("model", "split", "loss", "perplexity", "n_batches", "n_tokens")
# The book's solution: OpenAI's weights on The Verdict, evaluated as described above.
BOOK_LOSSES = {"124M": {"train": 3.7547, "val": 3.5596}, "1558M": {"train": 3.3046, "val": 3.1195}}
# (batches, target tokens) of each split of The Verdict with the book's loaders.
VERDICT_SPLITS = {"train": (9, 4608), "val": (1, 512)}


def _materialize(name: str, model, device):
    """A model object from a model or from a path :func:`load_model` reads."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device)
    raise TypeError(
        f"models[{name!r}] is a {type(model).__name__}; give a GPTModel, a converted GPT-2 folder or "
        "model.safetensors, or a gptlab checkpoint (.pt)"
    )


def _n_tokens(loader) -> int:
    """Target tokens the loss averages over (drop_last loaders skip the incomplete batch)."""
    windows = len(loader) * loader.batch_size if loader.drop_last else len(loader.dataset)
    return min(windows, len(loader.dataset)) * len(loader.dataset[0][1])


def _model_losses(name: str, model, loaders: dict, device, max_length: int, seed: int) -> list[dict]:
    """The rows of one model: loss and perplexity on each split, the book's way."""
    import torch

    from ..losses import calc_loss_loader

    context = model.pos_emb.num_embeddings
    if max_length > context:
        raise ValueError(
            f"max_length={max_length} exceeds the context length {context} of model {name!r}; "
            f"use max_length <= {context}"
        )
    was_training = model.training
    model.to(device).eval()
    torch.manual_seed(seed)  # as the book does before calc_loss_loader
    with torch.no_grad():
        losses = {split: calc_loss_loader(loader, model, device) for split, loader in loaders.items()}
    model.train(was_training)
    return [
        {
            "model": name,
            "split": split,
            "loss": losses[split],
            "perplexity": math.exp(losses[split]),
            "n_batches": len(loader),
            "n_tokens": _n_tokens(loader),
        }
        for split, loader in loaders.items()
    ]


def evaluate_losses(
    models: dict,
    text: str,
    *,
    train_ratio: float = 0.90,
    max_length: int = 256,
    stride: int = 256,
    batch_size: int = 2,
    seed: int = 123,
    device="cpu",
    tokenizer=None,
) -> pd.DataFrame:
    """Loss and perplexity of each model on the train and validation split of ``text``.

    ``models`` maps a name to a ``GPTModel`` or to a path (converted GPT-2
    folder / ``model.safetensors``, or a gptlab ``.pt`` checkpoint); paths are
    loaded one at a time and released, so large models never coexist in memory.
    Returns a tidy frame: one row per model and split with :data:`COLUMNS`.
    """
    import torch

    from ..data import create_book_loaders

    if not models:
        raise ValueError("models is empty: give at least one name -> model (or path)")
    device = torch.device(device)
    train_loader, val_loader = create_book_loaders(
        text,
        train_ratio=train_ratio,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        seed=seed,
        tokenizer=tokenizer,
    )
    loaders = {"train": train_loader, "val": val_loader}
    rows = []
    for name, entry in models.items():
        # One model at a time: a model loaded here from a path is freed before the next one.
        rows += _model_losses(name, _materialize(name, entry, device), loaders, device, max_length, seed)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def wide_losses(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per model: ``model, train_loss, val_loss`` (from :func:`evaluate_losses`'s tidy frame)."""
    wide = frame.pivot(index="model", columns="split", values="loss").reindex(pd.unique(frame["model"]))
    return pd.DataFrame(
        {"model": wide.index, "train_loss": wide["train"].to_numpy(), "val_loss": wide["val"].to_numpy()}
    )


def write_losses_csv(frame: pd.DataFrame, path, metadata: dict | None = None) -> Path:
    """Write ``frame`` as CSV atomically; return the path.

    With ``metadata``, a ``.meta.json`` sidecar records it with the library
    versions and the machine (``gptlab.io.write_table``).
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks columns {missing}; pass the result of evaluate_losses")
    if metadata is not None:
        return write_table(frame, path, metadata)
    with atomic_open(path, "w", newline="") as f:
        frame.to_csv(f, index=False)
    return Path(path)
