"""Sampling a grid with every model and scoring each text: the engine of exercises 5.2 and 5.6.

A :class:`SamplingGrid` says what every model samples: each prompt under each
``(temperature, top_k)`` setting with each seed. :func:`run_generations` decodes
all rows of one prompt together (:func:`gptlab.generation.generate_rows`),
``batch_size`` rows at a time; every row has its own seed stream, so a sample
does not depend on the batch it was drawn in. Each continuation is scored
(:mod:`.metrics`); the result has one row per generation (``GENERATION_COLUMNS``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from ..generation import RowSetting, check_setting, generate_rows
from .common import set_fields, top_k_label
from .metrics import VerbatimIndex, text_metrics

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


@dataclass(frozen=True)
class SamplingGrid:
    """What every model samples: each prompt under each setting with each seed.

    Lists are stored as tuples and temperatures as floats; a bad value raises a
    ``ValueError`` naming it when the grid is made.
    """

    prompts: tuple[str, ...]  # texts to continue (each must encode to at least one token)
    settings: tuple[tuple[float, int | None], ...]  # (temperature, top_k); top_k None: no filtering
    seeds: tuple[int, ...] = (123, 124, 125)  # one seed stream per row; seed s draws what manual_seed(s) does
    max_new_tokens: int = 25  # tokens generated after each prompt
    batch_size: int = 8  # rows decoded together (results do not depend on it)

    def __post_init__(self):
        set_fields(
            self,
            prompts=tuple(self.prompts),
            settings=tuple((float(t), k) for t, k in self.settings),
            seeds=tuple(int(s) for s in self.seeds),
        )
        if not self.prompts:
            raise ValueError("prompts is empty; give at least one prompt string")
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one integer seed")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        for t, k in self.settings:
            check_setting(t, k)

    def rows(self) -> list[RowSetting]:
        """One :class:`RowSetting` per setting and seed, seeds varying fastest."""
        return [RowSetting(t, k, None, s) for t, k in self.settings for s in self.seeds]

    def config(self) -> dict:
        """The grid as recorded in a table's sidecar (the seeds are recorded beside it)."""
        return {
            "prompts": list(self.prompts),
            "settings": [{"temperature": t, "top_k": top_k_label(k)} for t, k in self.settings],
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
        }


def training_index(tokenizer, train_text: str | None) -> VerbatimIndex | None:
    """Suffix automaton of the training text's tokens (``None`` when no text is given)."""
    if train_text is None:
        return None
    return VerbatimIndex(tokenizer.encode(train_text, allowed_special={"<|endoftext|>"}))


def _prompt_ids(tokenizer, pid: int, prompt: str, context: int, device) -> torch.Tensor:
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError(f"prompt {pid} ({prompt!r}) encodes to no tokens")
    return torch.tensor([ids[-context:]], device=device)


def _scored_rows(out, chunk, n_prompt: int, tokenizer, index, **keys) -> list[dict]:
    """One table row per generated continuation of ``out`` (a :class:`Generation` of ``chunk``)."""
    rows = []
    for row, job in enumerate(chunk):
        n = out.num_generated[row]
        new = out.token_ids[row, n_prompt : n_prompt + n].tolist()
        m = text_metrics(new, out.logprobs[row, :n].tolist(), index)
        span = new[m["verbatim_start"] : m["verbatim_start"] + m["verbatim_span"]] if index else []
        rows.append(
            {
                **keys,
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
    return rows


def run_generations(
    models: dict, tokenizer, grid: SamplingGrid, train_text=None, eos_id=None, progress=True
) -> pd.DataFrame:
    """Sample every (model, prompt, setting, seed) of ``grid`` and score each text; one row per generation.

    ``train_text`` (optional) is what the longest copied span is searched in.
    ``progress`` shows a bar on stderr, one tick per batch.
    """
    index = training_index(tokenizer, train_text)
    jobs = grid.rows()
    batches = range(0, len(jobs), grid.batch_size)
    bar = tqdm(
        total=len(models) * len(grid.prompts) * len(batches),
        desc="generate",
        unit="batch",
        file=sys.stderr,
        disable=not progress,
    )
    rows = []
    for name, model in models.items():
        bar.set_postfix_str(name)
        model.eval()
        ctx = model.pos_emb.num_embeddings
        for pid, prompt in enumerate(grid.prompts):
            idx = _prompt_ids(tokenizer, pid, prompt, ctx, next(model.parameters()).device)
            for start in batches:
                chunk = jobs[start : start + grid.batch_size]
                out = generate_rows(model, idx, grid.max_new_tokens, ctx, chunk, eos_id=eos_id)
                bar.update()
                keys = {"model": name, "prompt_id": pid, "prompt": prompt}
                rows += _scored_rows(out, chunk, idx.shape[1], tokenizer, index, **keys)
    bar.close()
    df = pd.DataFrame(rows, columns=GENERATION_COLUMNS)
    df["top_k"] = df["top_k"].astype("Int64")
    return df
