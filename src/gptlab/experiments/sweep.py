"""Exercise 5.2: temperature × top-k, measured.

Every cell of the grid (temperature × top-k) is sampled for every prompt and
seed and model; each generation is scored (:mod:`.metrics`). The outputs:

- per generation (:data:`.sampling.GENERATION_COLUMNS`): one row per model, prompt, setting and seed;
- per cell (:func:`aggregate_cells`): mean and standard deviation of each metric;
- "recommended settings" (:func:`recommend_settings`): rules applied to the cells.

The grid is a :class:`SweepGrid`; the sampling is :func:`.sampling.run_generations`, shared with 5.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..io import write_table
from .common import describe_models, set_fields, summarise_metrics, top_k_label
from .metrics import METRICS
from .sampling import SamplingGrid, run_generations

DEFAULT_TEMPERATURES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DEFAULT_TOP_KS = (1, 5, 25, 50, 200, None)  # None: no top-k filtering ("all")
CELL_KEYS = ["model", "temperature", "top_k_label"]


@dataclass(frozen=True)
class SweepGrid:
    """The 5.2 grid: every prompt at every temperature × top-k, with every seed.

    Lists are stored as tuples; a bad value raises a ``ValueError`` naming it when the grid is made.
    """

    prompts: tuple[str, ...]  # texts to continue
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES  # 0 = greedy
    top_ks: tuple[int | None, ...] = DEFAULT_TOP_KS  # None = no top-k filtering ("all")
    seeds: tuple[int, ...] = (123, 124, 125)  # one seed stream per row
    max_new_tokens: int = 30  # tokens generated after each prompt
    batch_size: int = 32  # rows decoded together (results do not depend on it)

    def __post_init__(self):
        set_fields(
            self,
            prompts=tuple(self.prompts),
            temperatures=tuple(float(t) for t in self.temperatures),
            top_ks=tuple(self.top_ks),
            seeds=tuple(int(s) for s in self.seeds),
        )
        self.sampling()  # checks every value

    def sampling(self) -> SamplingGrid:
        """The same grid as prompts × (temperature, top-k) settings × seeds."""
        settings = [(t, k) for t in self.temperatures for k in self.top_ks]
        return SamplingGrid(self.prompts, settings, self.seeds, self.max_new_tokens, self.batch_size)

    def config(self) -> dict:
        """The grid as recorded in the tables' sidecar (the seeds are recorded beside it)."""
        return {
            "prompts": list(self.prompts),
            "temperatures": list(self.temperatures),
            "top_ks": [top_k_label(k) for k in self.top_ks],
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
        }


def aggregate_cells(generations: pd.DataFrame, keys=CELL_KEYS) -> pd.DataFrame:
    """Per cell: ``n``, mean and std of every metric, and ``unique_text_fraction``.

    ``unique_text_fraction`` is, averaged over prompts, the number of different
    texts among the seeds divided by the number of seeds: 1/seeds when every
    seed gives the same text (deterministic decoding), 1.0 when all differ.
    """
    missing = [c for c in [*keys, "prompt_id", "text", *METRICS] if c not in generations.columns]
    if missing:
        raise ValueError(f"generations table lacks columns {missing}; pass the run_generations output")
    agg = summarise_metrics(generations, keys)
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


# criterion, rule, pool of cells, column, lowest wins. Pools: "all" cells of the model; "varied": cells in
# which every seed gave a different text; "likely": cells whose mean log-probability is at least the median.
RULES = [
    ("most_likely", "max mean_logprob", "all", "mean_logprob_mean", False),
    ("most_likely_varied", "max mean_logprob where every seed differs", "varied", "mean_logprob_mean", False),
    ("most_diverse", "max distinct_2", "all", "distinct_2_mean", False),
    ("balanced", "max distinct_2 where mean_logprob >= median", "likely", "distinct_2_mean", False),
    (
        "least_repetitive",
        "min repetition_rate where mean_logprob >= median",
        "likely",
        "repetition_rate_mean",
        True,
    ),
    (
        "least_memorised",
        "min verbatim_span where mean_logprob >= median",
        "likely",
        "verbatim_span_mean",
        True,
    ),
]


def _recommend_for_model(cells: pd.DataFrame) -> list[dict]:
    """One row per rule of :data:`RULES` that some cell of this model satisfies."""
    c = cells.assign(_k=[math.inf if x == "all" else int(x) for x in cells["top_k_label"]])
    c = c.sort_values(["temperature", "_k"], kind="stable")
    median = float(c["mean_logprob_mean"].median())
    pools = {
        "all": (c, math.nan),
        "varied": (c[c["unique_text_fraction"] >= 1.0], math.nan),
        "likely": (c[c["mean_logprob_mean"] >= median], median),
    }
    rows = []
    for criterion, rule, pool_name, col, lowest in RULES:
        pool, threshold = pools[pool_name]
        pool = pool.dropna(subset=[col])
        if pool.empty:
            continue
        best = pool.loc[pool[col].idxmin() if lowest else pool[col].idxmax()]
        rows.append(
            {
                "criterion": criterion,
                "rule": rule,
                "threshold": threshold,
                **{k: best[k] for k in RECOMMENDED_COLUMNS if k in best.index},
            }
        )
    return rows


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
    rows = [row for _, c in cells.groupby("model", sort=False) for row in _recommend_for_model(c)]
    return pd.DataFrame(rows, columns=RECOMMENDED_COLUMNS)


def write_sweep(
    generations_path,
    cells_path,
    recommended_path,
    models: dict,
    tokenizer,
    grid: SweepGrid,
    train_text=None,
    metadata=None,
):
    """Run the 5.2 grid and write its three tables (CSV + ``.meta.json`` each).

    ``train_text`` (optional) is what the longest copied span is searched in.
    Returns ``(generations, cells, recommended)`` DataFrames.
    """
    gens = run_generations(models, tokenizer, grid.sampling(), train_text)
    cells = aggregate_cells(gens)
    rec = recommend_settings(cells)
    meta = {
        "experiment": "5.2 temperature x top-k",
        "seeds": list(grid.seeds),
        "config": {**grid.config(), "memorisation_reference": train_text is not None},
        "models": describe_models(models),
        **(metadata or {}),
    }
    write_table(gens, generations_path, meta)
    write_table(cells, cells_path, meta)
    write_table(rec, recommended_path, meta)
    return gens, cells, rec
