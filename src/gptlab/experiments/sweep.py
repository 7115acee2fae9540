"""Exercise 5.2: temperature × top-k, measured.

Every cell of the grid (temperature × top-k) is sampled for every prompt and
seed and model; each generation is scored (:mod:`.metrics`). The outputs:

- per generation (:data:`.sampling.GENERATION_COLUMNS`): one row per model, prompt, setting and seed;
- per cell (:func:`aggregate_cells`): mean and standard deviation of each metric, and how much
  the text depends on the seed (``seed_disagreement``);
- "recommended settings" (:func:`recommend_settings`): rules applied to the cells, each stating
  its criterion; :func:`recommendation_gaps` lists the criteria that picked nothing, and why.

The grid is a :class:`SweepGrid`; the sampling is :func:`.sampling.run_generations`, shared with 5.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from ..io import write_table
from .common import describe_models, set_fields, summarise_metrics, top_k_label
from .metrics import METRIC_NAMES, METRICS

if TYPE_CHECKING:
    from .sampling import SamplingGrid

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
        from .sampling import SamplingGrid  # torch: only where the grid is sampled (not in reports)

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


def seed_disagreement(texts) -> float:
    """Share of pairs of seeds whose texts differ: 0 = every seed gave the same text, 1 = all differ.

    The chance that two different seeds, drawn at random, give different texts (the Gini-Simpson
    index of the texts); NaN with fewer than two seeds.
    """
    counts = pd.Series(list(texts)).value_counts()
    n = int(counts.sum())
    if n < 2:
        return math.nan
    return 1.0 - float((counts * (counts - 1)).sum()) / (n * (n - 1))


def aggregate_cells(generations: pd.DataFrame, keys=CELL_KEYS) -> pd.DataFrame:
    """Per cell: ``n``, mean and std of every metric, ``seed_disagreement`` and ``unique_text_fraction``.

    Both seed columns are computed per prompt and averaged over prompts:
    ``seed_disagreement`` (:func:`seed_disagreement`) is 0 when every seed gave the
    same text and 1 when every seed gave a different one; ``unique_text_fraction``
    is the number of different texts divided by the number of seeds (1/seeds when
    all agree, 1 when all differ).
    """
    missing = [c for c in [*keys, "prompt_id", "text", *METRICS] if c not in generations.columns]
    if missing:
        raise ValueError(f"generations table lacks columns {missing}; pass the run_generations output")
    agg = summarise_metrics(generations, keys)
    per_prompt = generations.groupby([*keys, "prompt_id"], sort=False)["text"]
    levels = list(range(len(keys)))
    agg["seed_disagreement"] = per_prompt.agg(seed_disagreement).groupby(level=levels, sort=False).mean()
    unique = per_prompt.agg(lambda s: s.nunique() / len(s))
    agg["unique_text_fraction"] = unique.groupby(level=levels, sort=False).mean()
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
    "seed_disagreement",
    "threshold",
    "candidates",
]
GAP_COLUMNS = ["model", "criterion", "rule", "reason"]

# (criterion, rule as stated in the table, pool of settings, column, lowest wins). Pools, per model:
# "all" settings; "sampling": T > 0 and top-k != 1 (greedy excluded); "varied": sampling settings in
# which every seed gave a different text; "likely": sampling settings whose mean log-prob is at least
# the median over the model's sampling settings (the threshold).
RULES = [
    (
        "most_likely",
        "highest mean log-prob of all settings, greedy ones included",
        "all",
        "mean_logprob_mean",
        False,
    ),
    (
        "most_likely_varied",
        "highest mean log-prob among sampling settings in which every seed gave a different text",
        "varied",
        "mean_logprob_mean",
        False,
    ),
    ("most_diverse", "highest distinct-2 among sampling settings", "sampling", "distinct_2_mean", False),
    (
        "balanced",
        "highest distinct-2 among sampling settings whose mean log-prob is at least their median",
        "likely",
        "distinct_2_mean",
        False,
    ),
    (
        "least_repetitive",
        "lowest repetition rate among those likely sampling settings",
        "likely",
        "repetition_rate_mean",
        True,
    ),
    (
        "least_memorised",
        "shortest copied span among those likely sampling settings",
        "likely",
        "verbatim_span_mean",
        True,
    ),
]
_EMPTY_POOL = {
    "sampling": "the grid has no sampling setting (T > 0 and top-k other than 1)",
    "varied": "no sampling setting gave a different text for every seed",
    "likely": "the grid has no sampling setting (T > 0 and top-k other than 1)",
}


def _pools(c: pd.DataFrame) -> dict:
    """Each pool of :data:`RULES` with its threshold (NaN where there is none)."""
    sampling = c[(c["temperature"] > 0) & (c["top_k_label"] != "1")]
    median = float(sampling["mean_logprob_mean"].median()) if len(sampling) else math.nan
    agree = c["seed_disagreement"] if "seed_disagreement" in c else pd.Series(math.nan, index=c.index)
    return {
        "all": (c, math.nan),
        "sampling": (sampling, math.nan),
        "varied": (sampling[agree.loc[sampling.index] >= 1.0 - 1e-9], math.nan),
        "likely": (sampling[sampling["mean_logprob_mean"] >= median], median),
    }


def _rank(c: pd.DataFrame, pool: pd.DataFrame, col: str, lowest: bool, pool_name: str):
    """The best setting of ``pool`` by ``col`` (a row), or why there is none (a string)."""
    values = c[col].dropna()
    name = METRIC_NAMES.get(col.removesuffix("_mean"), col)
    if values.empty:
        return f"{name} was not measured (no training text)" if col == "verbatim_span_mean" else "no values"
    if math.isclose(values.max(), values.min(), rel_tol=0, abs_tol=1e-9):
        return f"{name} is {values.iloc[0]:.3g} in every setting, so no setting is better than another"
    pool = pool.dropna(subset=[col])
    if pool.empty:
        return _EMPTY_POOL[pool_name]
    return pool.loc[pool[col].idxmin() if lowest else pool[col].idxmax()]


def _recommend_for_model(cells: pd.DataFrame) -> list[dict]:
    """One row per rule of :data:`RULES`: the setting it picks, or the reason it picks none."""
    c = cells.assign(_k=[math.inf if x == "all" else int(x) for x in cells["top_k_label"]])
    c = c.sort_values(["temperature", "_k"], kind="stable")  # ties: lower temperature, smaller k
    pools = _pools(c)
    rows = []
    for criterion, rule, pool_name, col, lowest in RULES:
        pool, threshold = pools[pool_name]
        best = _rank(c, pool, col, lowest, pool_name)
        row = {"model": c["model"].iloc[0], "criterion": criterion, "rule": rule}
        if isinstance(best, str):
            rows.append({**row, "reason": best})
            continue
        picked = {k: best[k] for k in RECOMMENDED_COLUMNS if k in best.index and k not in row}
        rows.append({**row, **picked, "threshold": threshold, "candidates": len(pool)})
    return rows


def _rows(cells: pd.DataFrame) -> list[dict]:
    return [row for _, c in cells.groupby("model", sort=False) for row in _recommend_for_model(c)]


def recommend_settings(cells: pd.DataFrame) -> pd.DataFrame:
    """Derive "recommended settings" per model from the aggregated cells (no hand-picked values).

    One row per criterion that picks a setting (``rule`` states it; ties go to the lower
    temperature, then the smaller top-k; ``candidates`` counts the settings it chose among).
    "Sampling settings" are those with T > 0 and top-k other than 1: greedy decoding is never
    recommended for variety.

    - ``most_likely``: highest mean log-probability of all settings (what greedy decoding buys);
    - ``most_likely_varied``: highest mean log-probability among sampling settings in which every
      seed gave a different text (``seed_disagreement == 1``): the most fluent setting that varies;
    - ``most_diverse``: highest distinct-2 among sampling settings;
    - ``balanced``: highest distinct-2 among sampling settings whose mean log-probability is at
      least the median over the model's sampling settings (``threshold``);
    - ``least_repetitive``: lowest repetition rate among those same settings;
    - ``least_memorised``: shortest verbatim span among those same settings (only with a training text).

    A criterion picks nothing when its metric is the same in every setting of the model (then
    no setting is better) or when no setting qualifies; :func:`recommendation_gaps` says which and why.
    """
    rows = [r for r in _rows(cells) if "reason" not in r]
    return pd.DataFrame(rows, columns=RECOMMENDED_COLUMNS)


def recommendation_gaps(cells: pd.DataFrame) -> pd.DataFrame:
    """The criteria of :func:`recommend_settings` that picked no setting, per model, with the reason."""
    rows = [r for r in _rows(cells) if "reason" in r]
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


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
    from .sampling import run_generations

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
