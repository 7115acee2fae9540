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

import pandas as pd
import torch

from ..artifacts import write_table
from ..generation import generate, generate_text_simple
from .sweep import describe_models, top_k_label

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


@torch.no_grad()
def determinism_audit(
    model,
    idx,
    max_new_tokens=20,
    temperatures=(0.0, 1.0),
    top_ks=(None, 1, 25),
    batch_sizes=(1, 4),
    rngs=("global", "per_row"),
    seedings=("same", "different"),
    use_caches=(True,),
    runs=3,
    seed=123,
) -> pd.DataFrame:
    """Run the determinism matrix on ``model`` with prompt ``idx`` (``[1, n]``); one row per setting."""
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ValueError(f"idx has shape {tuple(idx.shape)}; pass one prompt as [1, n]")
    if runs < 2:
        raise ValueError(f"runs={runs} must be >= 2 to compare runs")
    model.eval()
    ctx = model.pos_emb.num_embeddings
    greedy = generate_text_simple(model, idx, max_new_tokens, ctx)[0]
    rows = []
    for temperature, top_k, rng, seeding, batch, cache in itertools.product(
        temperatures, top_ks, rngs, seedings, batch_sizes, use_caches
    ):
        outs = [
            _run_once(
                model,
                idx,
                max_new_tokens,
                ctx,
                temperature,
                top_k,
                rng,
                _seeds(seed, r, batch, seeding, rng),
                cache,
            )
            for r in range(runs)
        ]
        singles = [
            _run_once(model, idx, max_new_tokens, ctx, temperature, top_k, rng, [s], cache)[0]
            for s in _seeds(seed, 0, batch, seeding, rng)[: 1 if rng == "global" else batch]
        ]
        seqs = {tuple(row.tolist()) for out in outs for row in out}
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
            "runs": runs,
            "max_new_tokens": max_new_tokens,
            "identical_across_runs": all(torch.equal(outs[0], o) for o in outs[1:]),
            "identical_to_greedy": all(torch.equal(r, greedy) for o in outs for r in o),
            "rows_identical": all(torch.equal(o[0], r) for o in outs for r in o),
            "batch_invariant": all(torch.equal(s, outs[0][i]) for i, s in enumerate(singles)),
            "n_distinct": len(seqs),
            "expected_deterministic": deterministic,
            "expected_greedy": greedy_expected,
        }
        row["as_expected"] = (
            row["identical_across_runs"] == deterministic and row["identical_to_greedy"] == greedy_expected
        )
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["top_k"] = df["top_k"].astype("Int64")
    return df


def write_determinism(
    path,
    model,
    idx,
    model_name="model",
    max_new_tokens=20,
    temperatures=(0.0, 1.0),
    top_ks=(None, 1, 25),
    batch_sizes=(1, 4),
    rngs=("global", "per_row"),
    seedings=("same", "different"),
    use_caches=(True,),
    runs=3,
    seed=123,
    metadata=None,
) -> pd.DataFrame:
    """Run :func:`determinism_audit` and write it as CSV plus ``.meta.json``."""
    df = determinism_audit(
        model, idx, max_new_tokens, temperatures, top_ks, batch_sizes, rngs, seedings, use_caches, runs, seed
    )
    df.insert(0, "model", model_name)
    config = {
        "prompt_ids": idx[0].tolist(),
        "max_new_tokens": max_new_tokens,
        "temperatures": [float(t) for t in temperatures],
        "top_ks": [top_k_label(k) for k in top_ks],
        "batch_sizes": list(batch_sizes),
        "rngs": list(rngs),
        "seedings": list(seedings),
        "use_caches": list(use_caches),
        "runs": runs,
    }
    write_table(
        df,
        path,
        {
            "experiment": "5.3 determinism audit",
            "seed": seed,
            "config": config,
            "models": describe_models({model_name: model}),
            **(metadata or {}),
        },
    )
    return df
