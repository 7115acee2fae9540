"""Exercise 5.2: temperature × top-k, measured.

Every cell of the grid (temperature × top-k) is sampled for every prompt and
seed and model; each generation is scored (:mod:`.metrics`). The outputs:

- per generation (``GENERATION_COLUMNS``): one row per model, prompt, setting and seed;
- per cell (:func:`aggregate_cells`): mean and standard deviation of each metric;
- "recommended settings" (:func:`recommend_settings`): rules applied to the cells.

All rows of one prompt are decoded together in batches (:func:`gptlab.generation.generate_rows`);
every row has its own seed stream, so a sample does not depend on the batch it was drawn in.
"""

from __future__ import annotations

import math
import sys

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..artifacts import write_table
from ..generation import RowSetting, generate_rows
from .metrics import METRICS, VerbatimIndex, text_metrics

DEFAULT_TEMPERATURES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DEFAULT_TOP_KS = (1, 5, 25, 50, 200, None)  # None: no top-k filtering ("all")
CELL_KEYS = ["model", "temperature", "top_k_label"]

GENERATION_COLUMNS = [
    "model",
    "prompt_id",
    "prompt",
    "temperature",
    "top_k",
    "top_k_label",
    "seed",
    "num_generated",
    "distinct_1",
    "distinct_2",
    "repetition_rate",
    "mean_logprob",
    "verbatim_span",
    "verbatim_start",
    "verbatim_text",
    "text",
    "token_ids",
]


def top_k_label(top_k) -> str:
    return "all" if top_k is None or (isinstance(top_k, float) and math.isnan(top_k)) else str(int(top_k))


def top_k_order(labels) -> list[str]:
    """Labels sorted by k, with "all" (no filtering) last."""
    return sorted(set(labels), key=lambda s: (s == "all", int(s) if s != "all" else 0))


def describe_models(models: dict) -> dict:
    """Name → config and parameter count, for metadata sidecars."""
    return {
        name: {"config": dict(getattr(m, "cfg", {})), "parameters": sum(p.numel() for p in m.parameters())}
        for name, m in models.items()
    }


def _check_grid(prompts, settings, seeds, max_new_tokens, batch_size):
    if not prompts:
        raise ValueError("prompts is empty; give at least one prompt string")
    if not seeds:
        raise ValueError("seeds is empty; give at least one integer seed")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    for t, k in settings:
        if t < 0:
            raise ValueError(f"temperature={t} must be >= 0 (0 means greedy)")
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ValueError(f"top_k={k!r} must be a positive integer or None (no filtering)")


def training_index(tokenizer, train_text: str | None) -> VerbatimIndex | None:
    """Suffix automaton of the training text's tokens (``None`` when no text is given)."""
    if train_text is None:
        return None
    return VerbatimIndex(tokenizer.encode(train_text, allowed_special={"<|endoftext|>"}))


def run_generations(
    models: dict,
    tokenizer,
    prompts,
    settings,
    seeds,
    max_new_tokens,
    train_text=None,
    batch_size=32,
    eos_id=None,
    progress=True,
) -> pd.DataFrame:
    """Sample every (model, prompt, setting, seed) and score each text; one row per generation.

    ``settings`` is a list of ``(temperature, top_k)``; ``top_k=None`` means no
    filtering. Rows of one prompt go through the model ``batch_size`` at a time.
    ``progress`` shows a bar on stderr, one tick per batch.
    """
    settings = [(float(t), k) for t, k in settings]
    _check_grid(prompts, settings, seeds, max_new_tokens, batch_size)
    index = training_index(tokenizer, train_text)
    rows = []
    n_jobs = len(settings) * len(seeds)
    bar = tqdm(
        total=len(models) * len(prompts) * math.ceil(n_jobs / batch_size),
        desc="generate",
        unit="batch",
        file=sys.stderr,
        disable=not progress,
    )
    for name, model in models.items():
        bar.set_postfix_str(name)
        model.eval()
        device = next(model.parameters()).device
        ctx = model.pos_emb.num_embeddings
        jobs = [RowSetting(t, k, None, int(s)) for t, k in settings for s in seeds]
        for pid, prompt in enumerate(prompts):
            ids = tokenizer.encode(prompt)
            if not ids:
                raise ValueError(f"prompt {pid} ({prompt!r}) encodes to no tokens")
            idx = torch.tensor([ids[-ctx:]], device=device)
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start : start + batch_size]
                out = generate_rows(model, idx, max_new_tokens, ctx, chunk, eos_id=eos_id)
                bar.update()
                for row, job in enumerate(chunk):
                    n = out.num_generated[row]
                    new = out.token_ids[row, idx.shape[1] : idx.shape[1] + n].tolist()
                    m = text_metrics(new, out.logprobs[row, :n].tolist(), index)
                    span = (
                        new[m["verbatim_start"] : m["verbatim_start"] + m["verbatim_span"]] if index else []
                    )
                    rows.append(
                        {
                            "model": name,
                            "prompt_id": pid,
                            "prompt": prompt,
                            "temperature": job.temperature,
                            "top_k": job.top_k,
                            "top_k_label": top_k_label(job.top_k),
                            "seed": job.seed,
                            **m,
                            "verbatim_text": tokenizer.decode(span),
                            "text": tokenizer.decode(new),
                            "token_ids": " ".join(map(str, new)),
                        }
                    )
    bar.close()
    df = pd.DataFrame(rows, columns=GENERATION_COLUMNS)
    df["top_k"] = df["top_k"].astype("Int64")
    return df


def aggregate_cells(generations: pd.DataFrame, keys=CELL_KEYS) -> pd.DataFrame:
    """Per cell: ``n``, mean and std of every metric, and ``unique_text_fraction``.

    ``unique_text_fraction`` is, averaged over prompts, the number of different
    texts among the seeds divided by the number of seeds: 1/seeds when every
    seed gives the same text (deterministic decoding), 1.0 when all differ.
    """
    missing = [c for c in [*keys, "prompt_id", "text", *METRICS] if c not in generations.columns]
    if missing:
        raise ValueError(f"generations table lacks columns {missing}; pass the run_generations output")
    g = generations.groupby(keys, sort=False)
    agg = g.size().rename("n").to_frame()
    for metric in METRICS:
        agg[f"{metric}_mean"] = g[metric].mean()
        agg[f"{metric}_std"] = g[metric].std(ddof=1)
    per_prompt = generations.groupby([*keys, "prompt_id"], sort=False)["text"].agg(
        lambda s: s.nunique() / len(s)
    )
    agg["unique_text_fraction"] = per_prompt.groupby(level=list(range(len(keys))), sort=False).mean()
    agg = agg.reset_index()
    if "top_k_label" in keys:
        agg.insert(
            keys.index("top_k_label") + 1,
            "top_k",
            [None if x == "all" else int(x) for x in agg["top_k_label"]],
        )
        agg["top_k"] = agg["top_k"].astype("Int64")
    return agg


RECOMMENDED_COLUMNS = [
    "model",
    "criterion",
    "rule",
    "temperature",
    "top_k_label",
    "mean_logprob_mean",
    "distinct_2_mean",
    "repetition_rate_mean",
    "verbatim_span_mean",
    "unique_text_fraction",
    "threshold",
]


def recommend_settings(cells: pd.DataFrame) -> pd.DataFrame:
    """Derive "recommended settings" per model from the aggregated cells (no hand-picked values).

    Criteria (ties go to the lower temperature, then the smaller top-k):

    - ``most_likely``: highest mean log-probability (what greedy-like decoding buys);
    - ``most_likely_varied``: highest mean log-probability among cells in which every seed gave a
      different text (``unique_text_fraction == 1``): the most fluent setting that still samples;
    - ``most_diverse``: highest distinct-2;
    - ``balanced``: highest distinct-2 among cells whose mean log-probability is at least the median
      over the model's cells (``threshold``);
    - ``least_repetitive``: lowest repetition rate among those same cells;
    - ``least_memorised``: shortest verbatim span among those same cells (only with a training text).
    """
    rows = []
    for model, c in cells.groupby("model", sort=False):
        c = c.assign(_k=[math.inf if x == "all" else int(x) for x in c["top_k_label"]])
        c = c.sort_values(["temperature", "_k"], kind="stable")
        median = float(c["mean_logprob_mean"].median())
        likely = c[c["mean_logprob_mean"] >= median]
        varied = c[c["unique_text_fraction"] >= 1.0]
        picks = [
            ("most_likely", "max mean_logprob", c, "mean_logprob_mean", False, math.nan),
            (
                "most_likely_varied",
                "max mean_logprob where every seed differs",
                varied,
                "mean_logprob_mean",
                False,
                math.nan,
            ),
            ("most_diverse", "max distinct_2", c, "distinct_2_mean", False, math.nan),
            (
                "balanced",
                "max distinct_2 where mean_logprob >= median",
                likely,
                "distinct_2_mean",
                False,
                median,
            ),
            (
                "least_repetitive",
                "min repetition_rate where mean_logprob >= median",
                likely,
                "repetition_rate_mean",
                True,
                median,
            ),
            (
                "least_memorised",
                "min verbatim_span where mean_logprob >= median",
                likely,
                "verbatim_span_mean",
                True,
                median,
            ),
        ]
        for criterion, rule, pool, col, ascending, threshold in picks:
            pool = pool.dropna(subset=[col])
            if pool.empty:
                continue
            best = pool.loc[pool[col].idxmin() if ascending else pool[col].idxmax()]
            rows.append(
                {
                    "model": model,
                    "criterion": criterion,
                    "rule": rule,
                    "threshold": threshold,
                    **{k: best[k] for k in RECOMMENDED_COLUMNS if k in best.index},
                }
            )
    return pd.DataFrame(rows, columns=RECOMMENDED_COLUMNS)


def write_sweep(
    generations_path,
    cells_path,
    recommended_path,
    models: dict,
    tokenizer,
    prompts,
    temperatures=DEFAULT_TEMPERATURES,
    top_ks=DEFAULT_TOP_KS,
    seeds=(123, 124, 125),
    max_new_tokens=30,
    train_text=None,
    batch_size=32,
    metadata=None,
):
    """Run the 5.2 grid and write its three tables (CSV + ``.meta.json`` each).

    Returns ``(generations, cells, recommended)`` DataFrames.
    """
    settings = [(t, k) for t in temperatures for k in top_ks]
    gens = run_generations(
        models, tokenizer, prompts, settings, seeds, max_new_tokens, train_text, batch_size
    )
    cells = aggregate_cells(gens)
    rec = recommend_settings(cells)
    meta = {
        "experiment": "5.2 temperature x top-k",
        "seeds": [int(s) for s in seeds],
        "config": {
            "prompts": list(prompts),
            "temperatures": [float(t) for t in temperatures],
            "top_ks": [top_k_label(k) for k in top_ks],
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "memorisation_reference": train_text is not None,
        },
        "models": describe_models(models),
        **(metadata or {}),
    }
    write_table(gens, generations_path, meta)
    write_table(cells, cells_path, meta)
    write_table(rec, recommended_path, meta)
    return gens, cells, rec
