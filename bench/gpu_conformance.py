"""The book's code and gptlab side by side on one device: conformance checks, then training ratios.

Made for CUDA (``bench/gpu_check.sh`` runs it there); ``--device cpu --smoke``
runs the same code in seconds, which is how it is tested without a GPU.

Checks (each printed PASS or FAIL with the difference measured; any FAIL makes
the exit status 1, after everything has run):

- logits: the book's ``GPTModel`` vs gptlab's exact mode (same kernels, so
  bit for bit) and fast mode (fused kernels: up to rounding, ``--fast-atol``),
  and fast mode under bf16 autocast where the device has bf16 (0.05, as
  ``tests/test_conformance.py``);
- decoding: gptlab's cached ``generate`` vs the book's ``generate``, greedy,
  the same tokens;
- training: a few AdamW steps from the same weights on the same batches, the
  losses of exact and fast mode against the book's (``--loss-atol``: the
  device's backward kernels may add in another order).

Then training tokens/s of book, exact and fast mode in the book's setting
(124M shape, context 256, batch 2), rounds alternating A B C, C B A, with the
ratios to the book. A CSV goes to ``--out``.

    python bench/gpu_conformance.py --device cuda
    python bench/gpu_conformance.py --device cpu --smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from llms_from_scratch import ch04 as book_ch04
from llms_from_scratch import ch05 as book_ch05

from gptlab import fast
from gptlab.generation import generate
from gptlab.io import write_table
from gptlab.losses import calc_loss_batch
from gptlab.model import GPT_CONFIG_124M, GPTModel

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = {**GPT_CONFIG_124M, "context_length": 64, "emb_dim": 64, "n_heads": 2, "n_layers": 2}
PROMPT = [6109, 3626, 6100, 345]  # "Every effort moves you"


def models(cfg, device, seed=321):
    """The book's model (its own initialisation) and gptlab's exact and fast models with its weights."""
    torch.manual_seed(seed)
    book = book_ch04.GPTModel(cfg)
    exact, quick = GPTModel(cfg), GPTModel(cfg).set_fast()
    exact.load_state_dict(book.state_dict())
    quick.load_state_dict(book.state_dict())
    return {"book": book.to(device), "exact": exact.to(device), "fast": quick.to(device)}


def check(results: list, name: str, diff: float, tol: float) -> None:
    ok = diff <= tol
    results.append({"check": name, "max_abs_diff": diff, "tolerance": tol, "passed": ok})
    print(f"{'PASS' if ok else 'FAIL'}  {name}: max |diff| {diff:.3g} (tolerance {tol:g})", flush=True)


def check_logits(cfg, device, results, fast_atol) -> None:
    m = models(cfg, device)
    idx = torch.randint(0, cfg["vocab_size"], (3, cfg["context_length"]), device=device)
    with torch.no_grad():
        out = {name: model.eval()(idx).float() for name, model in m.items()}
        check(results, "logits exact vs book", (out["exact"] - out["book"]).abs().max().item(), 0.0)
        check(results, "logits fast vs book", (out["fast"] - out["book"]).abs().max().item(), fast_atol)
        if fast.bf16_supported(device):
            with fast.autocast_context(device, True)():
                bf16 = m["fast"](idx).float()
            check(results, "logits fast bf16 vs book", (bf16 - out["book"]).abs().max().item(), 0.05)
        else:
            print(f"skip  logits fast bf16 vs book: no native bf16 on {device}")


def check_decoding(cfg, device, results, n=24) -> None:
    m = models(cfg, device)
    idx = torch.tensor([PROMPT], device=device)
    ctx = cfg["context_length"]
    with torch.no_grad():
        book = book_ch05.generate(m["book"].eval(), idx, n, ctx)
        ours = generate(m["exact"].eval(), idx, n, ctx)
    differ = float((book != ours).sum().item()) if book.shape == ours.shape else float(n)
    check(results, f"greedy generate, {n} tokens: tokens that differ from the book's", differ, 0.0)


def batches(cfg, device, count, batch_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, cfg["context_length"])
    draw = [torch.randint(0, cfg["vocab_size"], shape, generator=g).to(device) for _ in range(2 * count)]
    return list(zip(draw[::2], draw[1::2], strict=True))


def trainer(name, model, device, bf16=None):
    """One AdamW step (the book's settings) per call; returns the loss tensor.

    Fast mode computes in bf16 where the device has it (``bf16=None``), as it does by default.
    """
    if name == "fast":
        params = dict(lr=4e-4, weight_decay=0.1)
        model, optimizer, autocast = fast.fast_training(model, params, device=device, bf16=bf16)
        return lambda x, y: fast.train_step(model, optimizer, x, y, device, autocast)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)

    def step(x, y):
        optimizer.zero_grad()
        loss = calc_loss_batch(x, y, model, device)
        loss.backward()
        optimizer.step()
        return loss

    return step


def check_training(cfg, device, results, loss_atol, steps=5) -> None:
    m = models(cfg, device)
    data = batches(cfg, device, steps)
    losses = {}
    for name, model in m.items():
        step = trainer(name, model.train(), device, bf16=False)  # float32: comparable to the book
        torch.manual_seed(123)  # the same dropout draws
        losses[name] = torch.stack([step(x, y).detach().float() for x, y in data])
    for name in ("exact", "fast"):
        diff = (losses[name] - losses["book"]).abs().max().item()
        check(results, f"training losses {name} (float32) vs book, {steps} steps", diff, loss_atol)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_training(cfg, device, rounds, steps, warmup=2) -> pd.DataFrame:
    m = models(cfg, device)
    steppers = {name: trainer(name, model.train(), device) for name, model in m.items()}
    data = batches(cfg, device, steps)
    tokens = sum(x.numel() for x, _ in data)
    for step in steppers.values():
        for x, y in data[:warmup]:
            step(x, y)
    rows, names = [], list(steppers)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            for x, y in data:
                steppers[name](x, y)
            sync(device)
            rows.append({"variant": name, "round": r, "tokens_per_s": tokens / (time.perf_counter() - start)})
    return pd.DataFrame(rows)


def ratios(raw: pd.DataFrame) -> pd.DataFrame:
    """Median tokens/s of each variant, and its ratio to the book's within each round (median, min-max)."""
    book = raw[raw["variant"] == "book"].set_index("round")["tokens_per_s"]
    out = []
    for name, g in raw.groupby("variant", sort=False):
        r = (g.set_index("round")["tokens_per_s"] / book).tolist()
        tps = g["tokens_per_s"].tolist()
        out.append(
            {
                "variant": name,
                "train_tokens_per_s": statistics.median(tps),
                "ratio_vs_book": statistics.median(r),
                "ratio_min": min(r),
                "ratio_max": max(r),
            }
        )
    return pd.DataFrame(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, one round: seconds")
    parser.add_argument("--rounds", type=int, help="timed rounds of A B C (default 3; smoke 1)")
    parser.add_argument("--steps", type=int, help="training steps per timed run (default 20; smoke 2)")
    parser.add_argument("--fast-atol", type=float, default=1e-5, help="logits, fast vs book (float32)")
    parser.add_argument("--loss-atol", type=float, default=1e-3, help="training losses vs the book's")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "gpu_conformance.csv")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device: cannot run on {device}", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.smoke else 3)
    steps = args.steps or (2 if args.smoke else 20)
    cfg = SMOKE_CONFIG if args.smoke else {**GPT_CONFIG_124M, "context_length": 256}
    torch.manual_seed(0)

    print(f"conformance on {device} ({'smoke' if args.smoke else '124M shape'})", flush=True)
    results: list = []
    check_logits(cfg, device, results, args.fast_atol)
    check_decoding(cfg, device, results)
    check_training(cfg, device, results, args.loss_atol)

    summary = ratios(time_training(cfg, device, rounds, steps))
    bf16 = "bf16 autocast" if fast.bf16_supported(device) else "float32"
    print(f"\ntraining tokens/s on {device}, context {cfg['context_length']}, batch 2, {rounds} rounds")
    print(f"(fast mode in {bf16}, as it runs by default on this device)")
    for s in summary.itertuples():
        print(
            f"{s.variant:>6} {s.train_tokens_per_s:>12.1f} tokens/s  x book {s.ratio_vs_book:5.2f} "
            f"[{s.ratio_min:.2f}-{s.ratio_max:.2f}]"
        )
    meta = {"benchmark": "book vs gptlab on one device", "device": str(device), "config": cfg}
    meta |= {"rounds": rounds, "steps": steps, "fast_precision": bf16}
    write_table(summary, args.out, meta)
    write_table(pd.DataFrame(results), args.out.with_name(args.out.stem + "_checks.csv"), meta)
    failed = [r["check"] for r in results if not r["passed"]]
    print(f"\nwrote {args.out}; " + (f"FAILED: {', '.join(failed)}" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
