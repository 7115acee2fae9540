"""Exercise 5.6: models of different sizes under the same prompts, settings and seeds.

Every model gets exactly the same (prompt, temperature, top-k, seed) rows, so
differences between the texts come from the models alone. A seed ``s`` drives
its own stream (``torch.Generator().manual_seed(s)`` draws what
``torch.manual_seed(s)`` would), so seed 123 at batch size 1 reproduces the book's
``torch.manual_seed(123); generate(...)`` call, whatever batch size is used here.

Outputs: the per-generation table (as 5.2's), a per-model summary (mean and
std of each metric, parameter count, joined with the 5.5 losses when given), and
the texts side by side (one row per prompt/setting/seed, one ``text[<model>]``
column per model).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..generation import generate
from ..io import write_table
from ..model import count_parameters
from .common import describe_models, summarise_metrics
from .sampling import SamplingGrid, run_generations

# The book's samples from OpenAI's weights (section 5.5 and exercise 5.6): torch.manual_seed(123), then
# generate(model, "Every effort moves you", max_new_tokens=25, context_size=1024, top_k=50, temperature=1.5).
BOOK_SETTINGS = {
    "prompt": "Every effort moves you",
    "seed": 123,
    "temperature": 1.5,
    "top_k": 50,
    "max_new_tokens": 25,
}
BOOK_REFERENCES = {
    "124M": "Every effort moves you toward finding an ideal new way to practice something!\n\n"
    "What makes us want to be on top of that?",
    "1558M": "Every effort moves you toward finding an ideal life. You don't have to accept your current "
    "one at once, because if you do you'll never",
}


def check_book_reference(model, tokenizer, size: str) -> dict:
    """Sample the book's setting with ``model`` and compare with the book's text for ``size``.

    Uses an explicit generator seeded with 123, which draws exactly what the
    book's ``torch.manual_seed(123)`` does, so the global RNG is left alone.
    """
    if size not in BOOK_REFERENCES:
        raise ValueError(f"size={size!r} has no book reference; choose one of {sorted(BOOK_REFERENCES)}")
    b = BOOK_SETTINGS
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(b["prompt"])], device=device)
    model.eval()
    out = generate(
        model,
        idx,
        b["max_new_tokens"],
        model.pos_emb.num_embeddings,
        b["temperature"],
        b["top_k"],
        seeds=[b["seed"]],
    )
    text = tokenizer.decode(out[0].tolist())
    return {
        "size": size,
        **b,
        "text": text,
        "book_text": BOOK_REFERENCES[size],
        "matches_book": text == BOOK_REFERENCES[size],
    }


SIDE_KEYS = ["prompt_id", "prompt", "temperature", "top_k_label", "seed"]


@dataclass(frozen=True)
class SizesGrid(SamplingGrid):
    """The 5.6 grid: what every model samples (a :class:`.sampling.SamplingGrid` with the book's setting)."""

    # (temperature, top_k): the book's (1.5, 50)
    settings: tuple[tuple[float, int | None], ...] = ((BOOK_SETTINGS["temperature"], BOOK_SETTINGS["top_k"]),)
    seeds: tuple[int, ...] = (123, 124, 125)  # one seed stream per row; 123 reproduces the book's sample
    max_new_tokens: int = BOOK_SETTINGS["max_new_tokens"]  # tokens generated after each prompt (the book: 25)
    batch_size: int = 8  # rows decoded together (results do not depend on it)


def write_book_references(path, models: dict, tokenizer) -> pd.DataFrame:
    """:func:`check_book_reference` for every ``{size: model}`` the book has a text for, as CSV."""
    rows = [check_book_reference(m, tokenizer, size) for size, m in models.items() if size in BOOK_REFERENCES]
    df = pd.DataFrame(rows, columns=["size", *BOOK_SETTINGS, "text", "book_text", "matches_book"])
    write_table(df, path, {"experiment": "5.6 book reference", "models": describe_models(models)})
    return df


def summarise_sizes(generations: pd.DataFrame, models: dict | None = None, losses=None) -> pd.DataFrame:
    """One row per model: mean/std of every metric, ``parameters``, and the losses joined on ``model``.

    ``losses`` (optional) is a DataFrame with a ``model`` column (for example the
    5.5 table of train/validation losses per model); its other columns are added.
    """
    summary = summarise_metrics(generations, "model").reset_index()
    if models is not None:
        summary.insert(1, "parameters", [count_parameters(models[m]) for m in summary["model"]])
    if losses is None:
        return summary
    if "model" not in losses.columns:
        raise ValueError(f"losses has columns {list(losses.columns)}; it needs a 'model' column to join on")
    unknown = sorted(set(summary["model"]) - set(losses["model"]))
    if len(unknown) == len(summary):
        raise ValueError(
            f"none of the models {sorted(summary['model'])} appears in losses['model'] "
            f"({sorted(losses['model'].unique())}); name the models the same way in both"
        )
    return summary.merge(losses, on="model", how="left", validate="one_to_one")


def side_by_side(generations: pd.DataFrame) -> pd.DataFrame:
    """The continuations of every model next to each other (prompt/settings/seed per row)."""
    wide = generations.pivot(index=SIDE_KEYS, columns="model", values="text")
    order = list(dict.fromkeys(generations["model"]))
    wide = wide[order]
    wide.columns = [f"text[{m}]" for m in order]
    return wide.reset_index()


def compare_sizes(models: dict, tokenizer, grid: SizesGrid, train_text=None, losses=None):
    """Generate with every model; returns ``(generations, summary, side_by_side)``.

    ``train_text`` (optional) is what the longest copied span is searched in;
    ``losses`` (optional) is joined to the summary (see :func:`summarise_sizes`).
    """
    gens = run_generations(models, tokenizer, grid, train_text)
    return gens, summarise_sizes(gens, models, losses), side_by_side(gens)


def write_sizes(
    generations_path,
    summary_path,
    side_by_side_path,
    models: dict,
    tokenizer,
    grid: SizesGrid,
    train_text=None,
    losses=None,
    metadata=None,
):
    """Run :func:`compare_sizes` and write its three tables (CSV + ``.meta.json`` each)."""
    gens, summary, wide = compare_sizes(models, tokenizer, grid, train_text, losses)
    meta = {
        "experiment": "5.6 model sizes",
        "seeds": list(grid.seeds),
        "config": {
            **grid.config(),
            "memorisation_reference": train_text is not None,
            "losses_joined": losses is not None,
        },
        "models": describe_models(models),
        "book_settings": BOOK_SETTINGS,
        **(metadata or {}),
    }
    write_table(gens, generations_path, meta)
    write_table(summary, summary_path, meta)
    write_table(wide, side_by_side_path, meta)
    return gens, summary, wide
