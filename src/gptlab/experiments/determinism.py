"""Exercise 5.3: which settings make ``generate`` deterministic? Run them and record.

For every combination of temperature, top-k, random-number source, seeding
and batch size, ``generate`` is called ``runs`` times on the same prompt. The
table records what happened:

- ``identical_across_runs``: every run returned exactly the same tokens;
- ``identical_to_greedy``: every row of every run equals ``generate_text_simple`` (greedy, no cache);
- ``rows_identical``: within a run, all rows of the batch are the same;
- ``batch_invariant``: row ``i`` equals what a batch of one with the same seed gives
  (meaningful for ``rng="per_row"``; for the global RNG it compares row 0 with a batch
  of one drawn after the same ``torch.manual_seed``);
- ``n_distinct``: distinct sequences among all rows of all runs.

``rng="global"`` is the book's way (``torch.manual_seed`` then ``generate``),
``rng="per_row"`` passes ``seeds=`` (one stream per row). ``seeding="same"``
reseeds every run with the same seed(s); ``"different"`` uses new seeds each run.

``expected_deterministic`` / ``expected_greedy`` state the book's answer
(deterministic iff temperature 0, top-k 1 or a fixed seed; greedy iff
temperature 0 or top-k 1); ``as_expected`` compares them with what was observed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd
import torch

from ..generation import check_setting, generate, generate_text_simple
from ..io import write_table
from .common import describe_models, set_fields, top_k_label

COLUMNS = [
    "temperature",
    "top_k",
    "top_k_label",
    "rng",
    "seeding",
    "batch_size",
    "use_cache",
    "runs",
    "max_new_tokens",
    "identical_across_runs",
    "identical_to_greedy",
    "rows_identical",
    "batch_invariant",
    "n_distinct",
    "expected_deterministic",
    "expected_greedy",
    "as_expected",
]


RNGS = ("global", "per_row")
SEEDINGS = ("same", "different")


@dataclass(frozen=True)
class DeterminismGrid:
    """The 5.3 matrix: every combination of these is run ``runs`` times.

    Lists are stored as tuples; a bad value raises a ``ValueError`` naming it when the grid is made.
    """

    max_new_tokens: int = 20  # tokens generated per call
    temperatures: tuple[float, ...] = (0.0, 1.0)  # 0 = greedy
    top_ks: tuple[int | None, ...] = (None, 1, 25)  # None = no top-k filtering ("all")
    batch_sizes: tuple[int, ...] = (1, 4)  # rows per call (the prompt repeated)
    rngs: tuple[str, ...] = RNGS  # "global": torch.manual_seed, the book's way; "per_row": generate(seeds=)
    seedings: tuple[str, ...] = SEEDINGS  # every run reseeded with the "same" seed(s) or "different" ones
    use_caches: tuple[bool, ...] = (True,)  # with the key/value cache (False: recompute, as the book)
    runs: int = 3  # calls per setting, compared with each other (>= 2)
    seed: int = 123  # the first seed; row i of a per-row call gets seed + i

    def __post_init__(self):
        set_fields(
            self,
            **{
                name: tuple(getattr(self, name))
                for name in ("temperatures", "top_ks", "batch_sizes", "rngs", "seedings", "use_caches")
            },
        )
        if self.runs < 2:
            raise ValueError(f"runs={self.runs} must be >= 2 to compare runs")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 0")
        for name, allowed in (("rngs", RNGS), ("seedings", SEEDINGS)):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise ValueError(f"{name} has {unknown}; choose from {list(allowed)}")
        for size in self.batch_sizes:
            if size < 1:
                raise ValueError(f"batch size {size} must be >= 1")
        for t, k in itertools.product(self.temperatures, self.top_ks):
            check_setting(t, k, seed=self.seed)

    def settings(self):
        """Every combination: ``(temperature, top_k, rng, seeding, batch_size, use_cache)``."""
        return itertools.product(
            self.temperatures, self.top_ks, self.rngs, self.seedings, self.batch_sizes, self.use_caches
        )

    def config(self) -> dict:
        """The grid as recorded in the table's sidecar (the seed is recorded beside it)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperatures": [float(t) for t in self.temperatures],
            "top_ks": [top_k_label(k) for k in self.top_ks],
            "batch_sizes": list(self.batch_sizes),
            "rngs": list(self.rngs),
            "seedings": list(self.seedings),
            "use_caches": list(self.use_caches),
            "runs": self.runs,
        }


DEFAULT_GRID = DeterminismGrid()


def _run_once(model, idx, max_new_tokens, ctx, temperature, top_k, rng, seeds, use_cache):
    batch_idx = idx.expand(len(seeds), -1)
    if rng == "global":
        torch.manual_seed(seeds[0])  # the book's way: one seed, one stream for the whole batch
        return generate(model, batch_idx, max_new_tokens, ctx, temperature, top_k, use_cache=use_cache)
    return generate(
        model, batch_idx, max_new_tokens, ctx, temperature, top_k, seeds=seeds, use_cache=use_cache
    )


def _seeds(seed, run, batch_size, seeding, rng):
    base = seed if seeding == "same" else seed + 1000 * (run + 1)
    return [base + i for i in range(batch_size)] if rng == "per_row" else [base] * batch_size


def _observe(model, idx, grid: DeterminismGrid, greedy, setting) -> dict:
    """Run one setting ``grid.runs`` times (and row by row) and record what happened."""
    temperature, top_k, rng, seeding, batch, cache = setting
    ctx = model.pos_emb.num_embeddings

    def run(seeds):
        return _run_once(model, idx, grid.max_new_tokens, ctx, temperature, top_k, rng, seeds, cache)

    outs = [run(_seeds(grid.seed, r, batch, seeding, rng)) for r in range(grid.runs)]
    singles = [
        run([s])[0] for s in _seeds(grid.seed, 0, batch, seeding, rng)[: 1 if rng == "global" else batch]
    ]
    deterministic = temperature == 0 or top_k == 1 or seeding == "same"
    greedy_expected = temperature == 0 or top_k == 1
    row = {
        "temperature": float(temperature),
        "top_k": top_k,
        "top_k_label": top_k_label(top_k),
        "rng": rng,
        "seeding": seeding,
        "batch_size": batch,
        "use_cache": cache,
        "runs": grid.runs,
        "max_new_tokens": grid.max_new_tokens,
        "identical_across_runs": all(torch.equal(outs[0], o) for o in outs[1:]),
        "identical_to_greedy": all(torch.equal(r, greedy) for o in outs for r in o),
        "rows_identical": all(torch.equal(o[0], r) for o in outs for r in o),
        "batch_invariant": all(torch.equal(s, outs[0][i]) for i, s in enumerate(singles)),
        "n_distinct": len({tuple(r.tolist()) for o in outs for r in o}),
        "expected_deterministic": deterministic,
        "expected_greedy": greedy_expected,
    }
    row["as_expected"] = (
        row["identical_across_runs"] == deterministic and row["identical_to_greedy"] == greedy_expected
    )
    return row


@torch.no_grad()
def determinism_audit(model, idx, grid: DeterminismGrid = DEFAULT_GRID) -> pd.DataFrame:
    """Run the determinism matrix on ``model`` with prompt ``idx`` (``[1, n]``); one row per setting."""
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ValueError(f"idx has shape {tuple(idx.shape)}; pass one prompt as [1, n]")
    model.eval()
    greedy = generate_text_simple(model, idx, grid.max_new_tokens, model.pos_emb.num_embeddings)[0]
    rows = [_observe(model, idx, grid, greedy, setting) for setting in grid.settings()]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["top_k"] = df["top_k"].astype("Int64")
    return df


def write_determinism(
    path,
    model,
    idx,
    model_name="model",
    grid: DeterminismGrid = DEFAULT_GRID,
    metadata=None,
) -> pd.DataFrame:
    """Run :func:`determinism_audit` and write it as CSV plus ``.meta.json``."""
    df = determinism_audit(model, idx, grid)
    df.insert(0, "model", model_name)
    write_table(
        df,
        path,
        {
            "experiment": "5.3 determinism audit",
            "seed": grid.seed,
            "config": {"prompt_ids": idx[0].tolist(), **grid.config()},
            "models": describe_models({model_name: model}),
            **(metadata or {}),
        },
    )
    return df
