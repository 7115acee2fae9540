"""Exercise 5.1 timed: the book's 1000-draw loop vs one vectorised draw vs the exact probability.

For each of the book's temperatures (1, 0.1, 5) every method produces the
"pizza" answer: the loop and the vectorised draw give counts (identical ones,
checked here), the exact method gives ``softmax(logits / T)`` and the expected
count. Runs alternate between methods; the table reports medians with the
min-max spread and ratios to the book's loop.

    python bench/bench_pizza.py            # 1000 draws, 7 runs each
    python bench/bench_pizza.py --smoke    # 3 runs, a second or two
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from gptlab.experiments.pizza import (
    BOOK_TEMPERATURES,
    PIZZA_ID,
    exact_probabilities,
    sample_counts,
    toy_logits,
)
from gptlab.io import write_table

REPO = Path(__file__).resolve().parents[1]
SEED = 123


def book_loop(logits, n):
    return [
        int(sample_counts(exact_probabilities(logits, t), n, SEED, "loop")[PIZZA_ID])
        for t in BOOK_TEMPERATURES
    ]


def vectorised(logits, n):
    return [
        int(sample_counts(exact_probabilities(logits, t), n, SEED, "vectorised")[PIZZA_ID])
        for t in BOOK_TEMPERATURES
    ]


def exact(logits, n):
    # One softmax over all three temperatures at once: the probabilities, no sampling at all.
    temps = torch.tensor(BOOK_TEMPERATURES)[:, None]
    return (torch.softmax(logits[None, :] / temps, dim=-1)[:, PIZZA_ID] * n).tolist()


METHODS = {"book_loop": book_loop, "vectorised": vectorised, "exact": exact}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="3 runs each: a second or two")
    parser.add_argument(
        "--draws", type=int, default=1000, help="draws per temperature (default 1000, the book's)"
    )
    parser.add_argument("--repeats", type=int, help="timed runs per method (default 7; smoke 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--out", type=Path, help="CSV (default results/bench/pizza.csv; smoke: pizza_smoke.csv)"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.smoke else 7)
    args.out = args.out or REPO / "results" / "bench" / ("pizza_smoke.csv" if args.smoke else "pizza.csv")
    if repeats < 1 or args.draws < 1:
        parser.error("--repeats and --draws must be >= 1")
    torch.set_num_threads(args.threads)
    logits = toy_logits()

    answers = {name: fn(logits, args.draws) for name, fn in METHODS.items()}  # also a warm-up
    same_counts = answers["book_loop"] == answers["vectorised"]
    raw, names = [], list(METHODS)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            METHODS[name](logits, args.draws)
            raw.append({"method": name, "repeat": r, "seconds": time.perf_counter() - start})
    raw = pd.DataFrame(raw)

    rows = []
    for name, g in raw.groupby("method", sort=False):
        rows.append(
            {
                "method": name,
                "draws": args.draws,
                "temperatures": " ".join(map(str, BOOK_TEMPERATURES)),
                "runs": len(g),
                "median_s": g["seconds"].median(),
                "min_s": g["seconds"].min(),
                "max_s": g["seconds"].max(),
                "pizza": " ".join(f"{x:g}" if isinstance(x, int) else f"{x:.2f}" for x in answers[name]),
            }
        )
    summary = pd.DataFrame(rows)
    book = summary.set_index("method").loc["book_loop"]
    summary["speedup_vs_book"] = book["median_s"] / summary["median_s"]
    summary["speedup_min"] = book["min_s"] / summary["max_s"]
    summary["speedup_max"] = book["max_s"] / summary["min_s"]
    summary["same_counts_as_book"] = [
        answers[m] == answers["book_loop"] if m != "exact" else pd.NA for m in summary["method"]
    ]
    meta = {
        "benchmark": "exercise 5.1 pizza",
        "seed": SEED,
        "draws": args.draws,
        "repeats": repeats,
        "threads": args.threads,
        "temperatures": list(BOOK_TEMPERATURES),
    }
    write_table(summary, args.out, meta)

    print(f"pizza at T = {BOOK_TEMPERATURES}, {args.draws} draws, {repeats} runs each (median [min-max])")
    print(f"{'method':>11} {'seconds':>30} {'x book loop':>22}  pizza (count or expected count)")
    for _, s in summary.iterrows():
        secs = f"{s.median_s:.2e} [{s.min_s:.2e}-{s.max_s:.2e}]"
        ratio = f"{s.speedup_vs_book:8.1f} [{s.speedup_min:.1f}-{s.speedup_max:.1f}]"
        print(f"{s.method:>11} {secs:>30} {ratio:>22}  {s.pizza}")
    print(f"\nloop and vectorised counts identical: {same_counts}; wrote {args.out}")
    return 0 if same_counts else 1


if __name__ == "__main__":
    sys.exit(main())
