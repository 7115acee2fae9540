"""What several experiments share: loading and describing models, top-k labels, tables, metric summaries.

Every table's sidecar describes its models (:func:`describe_models`): shape, parameter
count and where the weights came from (:func:`model_origin`), so that a report can say
when GPT-2 results do not come from OpenAI's weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .metrics import METRICS


def set_fields(frozen, **values) -> None:
    """Set fields of a frozen dataclass (in its ``__post_init__``, to store normalised values)."""
    for name, value in values.items():
        object.__setattr__(frozen, name, value)


ORIGIN_ATTRIBUTE = "weights_origin"  # set by load_model on the model it returns; read by describe_models
GPT2_RELEASE, CHECKPOINT, IN_MEMORY = "converted GPT-2 release", "gptlab checkpoint", "in memory"


def _is_checkpoint(path: Path) -> bool:
    return path.suffix in (".pt", ".pth")


def load_model(path, device="cpu"):
    """The model stored at ``path``, in eval mode on ``device``.

    ``path`` is a converted GPT-2 (folder or ``model.safetensors``) or a gptlab
    checkpoint (``.pt``/``.pth``); the model's config comes from the file. Where the
    weights came from (:func:`model_origin`) travels with the model, for
    :func:`describe_models`.
    """
    path = Path(path)
    if _is_checkpoint(path):
        from ..training.checkpoint import model_from_checkpoint

        model = model_from_checkpoint(path, device=device)
    else:
        from ..gpt2 import load_gpt2

        model = load_gpt2(path, device=device)
    setattr(model, ORIGIN_ATTRIBUTE, model_origin(path))
    return model.eval()


def _config_origin(cfg: dict) -> dict:
    """The origin of a model made in memory: only its shape can be compared with OpenAI's releases."""
    from ..gpt2 import GPT2_HPARAMS, gpt2_model_config

    shape = {k: v for k, v in cfg.items() if k != "drop_rate"}
    for size, hparams in GPT2_HPARAMS.items():
        if shape == {k: v for k, v in gpt2_model_config(hparams).items() if k != "drop_rate"}:
            evidence = f"built in memory with the shape of OpenAI's {size}; its weights' source is unknown"
            return {"source": IN_MEMORY, "matches_openai": None, "release": size, "evidence": evidence}
    evidence = "not OpenAI's weights: made in memory, with a shape none of OpenAI's GPT-2 releases has"
    return {"source": IN_MEMORY, "matches_openai": False, "release": None, "evidence": evidence}


def model_origin(model) -> dict:
    """Where a model's weights come from, for sidecars and reports.

    ``model`` is a path :func:`load_model` reads, or a model (one :func:`load_model` returned
    carries its origin). Returns ``{"source", "matches_openai", "release", "evidence"}``:

    - a converted GPT-2 (``source`` "converted GPT-2 release"): :func:`gptlab.gpt2.release_origin`,
      compared with the release its folder is named after (``results/gpt2/<size>``) or else with any;
      ``matches_openai`` is False when the file is certainly not OpenAI's release and True when its
      shape and size are OpenAI's (the values cannot be checked);
    - a gptlab checkpoint: weights trained with gptlab (``matches_openai`` False);
    - a model made in memory: compared by shape only (False, or None when it has an OpenAI shape).
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if _is_checkpoint(path):
            evidence = "trained with gptlab (a training checkpoint), not OpenAI's GPT-2"
            return {"source": CHECKPOINT, "matches_openai": False, "release": None, "evidence": evidence}
        from ..gpt2 import SIZES, release_origin

        folder = path if path.is_dir() else path.parent  # results/gpt2/<size>/model.safetensors
        named = folder.name if folder.name in SIZES else None
        return {"source": GPT2_RELEASE, **release_origin(path, named)}
    recorded = getattr(model, ORIGIN_ATTRIBUTE, None)
    return dict(recorded) if recorded else _config_origin(dict(getattr(model, "cfg", {})))


def load_models(paths: dict, device="cpu") -> dict:
    """``{name: path}`` → ``{name: model}`` (each read by :func:`load_model`), in order."""
    return {name: load_model(path, device) for name, path in paths.items()}


def describe_models(models: dict) -> dict:
    """Name → config, parameter count and origin (:func:`model_origin`), for metadata sidecars."""
    from ..model import count_parameters  # torch: only where there are models

    return {
        name: {
            "config": dict(getattr(m, "cfg", {})),
            "parameters": count_parameters(m),
            "origin": model_origin(m),
        }
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
