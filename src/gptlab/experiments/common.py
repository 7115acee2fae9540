"""What several experiments share: loading and describing models, top-k labels, tables, metric summaries."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..model import count_parameters
from .metrics import METRICS


def set_fields(frozen, **values) -> None:
    """Set fields of a frozen dataclass (in its ``__post_init__``, to store normalised values)."""
    for name, value in values.items():
        object.__setattr__(frozen, name, value)


def load_model(path, device="cpu"):
    """The model stored at ``path``, in eval mode on ``device``.

    ``path`` is a converted GPT-2 (folder or ``model.safetensors``) or a gptlab
    checkpoint (``.pt``/``.pth``); the model's config comes from the file.
    """
    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        from ..training.checkpoint import model_from_checkpoint

        model = model_from_checkpoint(path, device=device)
    else:
        from ..gpt2 import load_gpt2

        model = load_gpt2(path, device=device)
    return model.eval()


def load_models(paths: dict, device="cpu") -> dict:
    """``{name: path}`` → ``{name: model}`` (each read by :func:`load_model`), in order."""
    return {name: load_model(path, device) for name, path in paths.items()}


def describe_models(models: dict) -> dict:
    """Name → config and parameter count, for metadata sidecars."""
    return {
        name: {"config": dict(getattr(m, "cfg", {})), "parameters": count_parameters(m)}
        for name, m in models.items()
    }


def top_k_label(top_k) -> str:
    """``"all"`` for no top-k filtering (``None`` or NaN), else ``k`` as text."""
    return "all" if top_k is None or (isinstance(top_k, float) and math.isnan(top_k)) else str(int(top_k))


def top_k_order(labels) -> list[str]:
    """Labels sorted by k, with "all" (no filtering) last."""
    return sorted(set(labels), key=lambda s: (s == "all", int(s) if s != "all" else 0))


def read_table(table) -> pd.DataFrame:
    """A table an experiment wrote: a DataFrame as given, or a CSV read back as written.

    Empty cells are NaN and nothing else is (a text such as "NA" stays text);
    ``top_k_label`` is read as text ("5", "all").
    """
    if isinstance(table, pd.DataFrame):
        return table
    return pd.read_csv(table, keep_default_na=False, na_values=[""], dtype={"top_k_label": str})


def summarise_metrics(generations: pd.DataFrame, keys) -> pd.DataFrame:
    """Per group of ``keys`` (the index): ``n``, then the mean and standard deviation of every metric."""
    g = generations.groupby(keys, sort=False)
    summary = g.size().rename("n").to_frame()
    for metric in METRICS:
        summary[f"{metric}_mean"] = g[metric].mean()
        summary[f"{metric}_std"] = g[metric].std(ddof=1)
    return summary
