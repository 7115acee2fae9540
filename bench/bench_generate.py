"""Tokens per second of decoding: the book's ``generate`` vs gptlab's cached and batched paths.

All paths run in one process on the same model (the 124M shape, random weights:
speed does not depend on the values) with the book's sampling settings
(temperature 1.4, top-k 25). Runs alternate between the methods (A B C, C B A,
...) so that drifts in machine load hit all of them alike; the table reports
medians with the min-max spread and ratios to the book's path.

The book's path recomputes the whole context for each new token; gptlab's
``generate`` keeps a key/value cache. Both are checked to produce the same
tokens (``same_tokens_as_book``) before anything is timed.

    python bench/bench_generate.py            # 124M shape, 64 and 256 new tokens
    python bench/bench_generate.py --smoke    # a tiny model, a few seconds
    python bench/bench_generate.py --device cuda   # on a GPU (timings wait for the device to finish)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from llms_from_scratch.ch05 import generate as book_generate

from gptlab.generation import generate
from gptlab.io import write_table
from gptlab.model import GPT_CONFIG_124M, GPTModel

REPO = Path(__file__).resolve().parents[1]
PROMPT = [6109, 3626, 6100, 345]  # "Every effort moves you"
TEMPERATURE, TOP_K, SEED = 1.4, 25, 123
SMOKE_CONFIG = {**GPT_CONFIG_124M, "context_length": 64, "emb_dim": 64, "n_heads": 2, "n_layers": 2}


def methods(batch: int):
    def book(model, idx, n, ctx):
        torch.manual_seed(SEED)
        return book_generate(model, idx, n, ctx, temperature=TEMPERATURE, top_k=TOP_K)

    def cached(model, idx, n, ctx):
        torch.manual_seed(SEED)
        return generate(model, idx, n, ctx, TEMPERATURE, TOP_K)

    def batched(model, idx, n, ctx):
        return generate(model, idx, n, ctx, TEMPERATURE, TOP_K, seeds=list(range(SEED, SEED + batch)))

    return {"book": (book, 1), "gptlab_cached": (cached, 1), f"gptlab_batched_{batch}": (batched, batch)}


def sync(device) -> None:
    """Wait for the device's queued work: CUDA runs asynchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(raw: pd.DataFrame, same: dict) -> pd.DataFrame:
    """Median and min-max of each method and length, and ratios to the book's path."""
    rows = []
    for (name, n), g in raw.groupby(["method", "new_tokens"], sort=False):
        tps = g["tokens_per_s"]
        rows.append(
            {
                "method": name,
                "batch_size": int(g["batch_size"].iloc[0]),
                "new_tokens": n,
                "runs": len(g),
                "median_s": g["seconds"].median(),
                "min_s": g["seconds"].min(),
                "max_s": g["seconds"].max(),
                "tokens_per_s_median": statistics.median(tps),
                "tokens_per_s_min": tps.min(),
                "tokens_per_s_max": tps.max(),
                "same_tokens_as_book": same[name],
            }
        )
    summary = pd.DataFrame(rows)
    book = summary[summary["method"] == "book"].set_index("new_tokens")["tokens_per_s_median"]
    summary["speedup_vs_book"] = summary["tokens_per_s_median"] / summary["new_tokens"].map(book)
    # Spread of the ratio: worst and best pairing of runs.
    book_fastest = summary["new_tokens"].map(
        summary[summary["method"] == "book"].set_index("new_tokens")["tokens_per_s_max"]
    )
    book_slowest = summary["new_tokens"].map(
        summary[summary["method"] == "book"].set_index("new_tokens")["tokens_per_s_min"]
    )
    summary["speedup_min"] = summary["tokens_per_s_min"] / book_fastest
    summary["speedup_max"] = summary["tokens_per_s_max"] / book_slowest
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model and few tokens: runs in seconds")
    parser.add_argument("--tokens", type=int, nargs="+", help="new-token counts (default 64 256; smoke 8 16)")
    parser.add_argument("--repeats", type=int, help="timed runs per method and length (default 3; smoke 2)")
    parser.add_argument("--batch", type=int, default=8, help="rows of the batched path (default 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default 2; smoke 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--out", type=Path, help="CSV (default results/bench/generate.csv; smoke: generate_smoke.csv)"
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.smoke else 3)
    args.threads = args.threads or (1 if args.smoke else 2)
    args.out = args.out or REPO / "results" / "bench" / (
        "generate_smoke.csv" if args.smoke else "generate.csv"
    )
    load_before = os.getloadavg()
    if args.repeats < 1 or args.batch < 1 or args.threads < 1:
        parser.error("--repeats, --batch and --threads must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")

    torch.set_num_threads(args.threads)
    cfg = SMOKE_CONFIG if args.smoke else GPT_CONFIG_124M
    tokens = args.tokens or ([8, 16] if args.smoke else [64, 256])
    torch.manual_seed(SEED)
    model = GPTModel(cfg).eval().to(device)
    ctx = cfg["context_length"]
    idx = torch.tensor([PROMPT], device=device)
    runs = methods(args.batch)

    # Correctness first: the cached path must return the book's tokens (same seed, same draws).
    check_n = min(tokens)
    reference = runs["book"][0](model, idx, check_n, ctx)
    same = {name: torch.equal(fn(model, idx, check_n, ctx)[:1], reference) for name, (fn, _) in runs.items()}
    for fn, _ in runs.values():  # one warm-up call each
        fn(model, idx, 2, ctx)

    raw = []
    names = list(runs)
    for n in tokens:
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                fn, batch = runs[name]
                sync(device)
                start = time.perf_counter()
                out = fn(model, idx, n, ctx)
                sync(device)
                seconds = time.perf_counter() - start
                generated = (out.shape[1] - idx.shape[1]) * out.shape[0]
                raw.append(
                    {
                        "method": name,
                        "batch_size": batch,
                        "new_tokens": n,
                        "repeat": r,
                        "seconds": seconds,
                        "tokens_per_s": generated / seconds,
                    }
                )
                print(f"  {name:>20} n={n:<4} run {r}: {seconds:8.3f} s", file=sys.stderr)

    raw = pd.DataFrame(raw)
    summary = summarise(raw, same)

    shape = "smoke" if args.smoke else "124M"
    meta = {
        "benchmark": "generate tokens/s",
        "model_shape": shape,
        "config": cfg,
        "threads": args.threads,
        "device": str(device),
        "repeats": args.repeats,
        "temperature": TEMPERATURE,
        "top_k": TOP_K,
        "seed": SEED,
        "prompt_ids": PROMPT,
        "goal": ">= 5x tokens/s vs the book at 256 new tokens, batch 1",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    write_table(summary, args.out, meta)
    write_table(raw, args.out.with_name(args.out.stem + "_runs.csv"), meta)

    print(
        f"\ngenerate on {device}, {shape} shape, {args.threads} threads, "
        f"{args.repeats} runs each (median [min-max])"
    )
    print(f"{'method':>20} {'batch':>5} {'tokens':>6} {'tokens/s':>24} {'x book':>18} {'same tokens':>11}")
    for _, s in summary.iterrows():
        tps = f"{s.tokens_per_s_median:8.1f} [{s.tokens_per_s_min:.1f}-{s.tokens_per_s_max:.1f}]"
        ratio = f"{s.speedup_vs_book:6.2f} [{s.speedup_min:.2f}-{s.speedup_max:.2f}]"
        same_tokens = str(s.same_tokens_as_book)
        print(f"{s.method:>20} {s.batch_size:>5} {s.new_tokens:>6} {tps:>24} {ratio:>18} {same_tokens:>11}")
    print(f"\nwrote {args.out}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
