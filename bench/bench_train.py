"""Training and evaluation throughput: the book's code vs gptlab's exact mode vs fast mode.

Three variants train the same model (the book's 124M shape with a 256-token
context, batch 2, AdamW lr 4e-4, weight decay 0.1) on the same random token
batches:

- ``book``: ``llms_from_scratch.ch04.GPTModel`` with the book's
  ``calc_loss_batch`` and a plain ``torch.optim.AdamW``, stepped as in
  ``train_model_simple``;
- ``exact``: gptlab's ``GPTModel`` and loss (bit-identical to the book);
- ``fast``: gptlab's fast mode (``gptlab.fast.fast_training``).

Every measurement runs in a fresh subprocess (so peak RSS is the variant's
own; in the smoke size one subprocess runs all three), in rounds ``A B C``,
``C B A``, ... so that drifts in machine load hit all variants alike.
Reported: medians with min-max spread over rounds (each run's own figure is
the median over its steps), and ratios to the book computed within each
round. Training throughput is also given per CPU second (less sensitive to
other work on a shared machine). Evaluation throughput is one evaluation as
``train_model_simple`` does it (``eval_iter`` training batches and the
validation batches): the book's ``evaluate_model`` vs each variant's own.

The script also measures this machine's matmul peak (a large ``torch.matmul``
in float32 and bf16, before and after the rounds; the best is the peak) and
reports each variant's achieved model FLOP/s as a fraction of the peak in
the dtype the variant computes in. Model FLOPs per token follow the usual
count (PaLM, appendix B): forward ``2*N + 4*L*T*d`` with ``N`` the
non-embedding matmul parameters plus the output head, training 3x forward.

Where the time goes: after its timed runs each worker profiles training
steps and one evaluation with ``torch.profiler`` and files each operation's
self time under a category (``CATEGORIES``: the linear layers' matmuls,
attention, the output head, cross-entropy, LayerNorm/GELU, casts, the
optimizer, data loading, ...). Forward operations are attributed by the
module that runs them (forward hooks mark each module), backward operations
by the forward operation that recorded them (the autograd sequence number).
The shares go to ``<out>_breakdown.csv`` and are printed beside the ratios.

    python bench/bench_train.py              # the book's shape, 3 rounds (~10-15 min on 2 cores)
    python bench/bench_train.py --smoke      # a tiny model, seconds
    python bench/bench_train.py --book-run   # also: the book's 10-epoch run in fast mode (minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"
VARIANTS = ("book", "exact", "fast", "fast_plain")
# fast_plain, on request: fast mode with the book's loss (a float32 copy of the logits under autocast)
# and memory returned to the system, to measure what the chunked loss and keep_freed_memory bring;
# its attention and evaluation are fast mode's.
DEFAULT_VARIANTS = VARIANTS[:3]
BOOK_FINAL = {"final_train_loss": 0.391, "final_val_loss": 6.452}  # the book's (and exact mode's) last line
BOOK_CONFIG = {
    "vocab_size": 50257,
    "context_length": 256,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}
SMOKE_CONFIG = {
    **BOOK_CONFIG,
    "vocab_size": 1000,
    "context_length": 32,
    "emb_dim": 32,
    "n_heads": 4,
    "n_layers": 2,
}
HIGHER_IS_BETTER = {
    "train_tokens_per_s": True,
    "train_tokens_per_cpu_s": True,
    "eval_tokens_per_s": True,
    "train_flops_per_s": True,
    "train_fraction_of_peak": True,
    "eval_fraction_of_peak": True,
    "peak_rss_mb": False,
    "flops_per_s": True,
}


def forward_flops_per_token(cfg: dict, seq_len: int) -> float:
    """Matmul FLOPs of one token's forward pass (attention counted over the full square)."""
    d, n_layers = cfg["emb_dim"], cfg["n_layers"]
    per_layer = 2 * 12 * d * d + 4 * seq_len * d  # qkv + out_proj + feed-forward, then QK^T and AV
    return n_layers * per_layer + 2 * d * cfg["vocab_size"]  # + output head


# --------------------------------------------------------------------------- where the time goes

# Categories of the operator-level breakdown, in the order they are reported.
CATEGORIES = {
    "matmul": "matmuls of the linear layers (q, k, v, out_proj, feed-forward)",
    "attention": "attention proper: scores, mask, softmax, dropout, weights x values",
    "out_head": "the 50,257-wide output head",
    "cross_entropy": "cross-entropy (log-softmax, NLL)",
    "norm_gelu": "LayerNorm and GELU",
    "elementwise": "embeddings, dropout, residual additions",
    "casts": "dtype casts (autocast)",
    "optimizer": "optimizer: zero_grad, AdamW step, gradient accumulation",
    "data": "batch loading",
    "other": "the rest: Python, autograd engine and profiler overhead",
}
LOSS_OPS = ("crossentropy", "logsoftmax", "nllloss")  # in op names, lower case without underscores
MODULE_MARK = "module:"
BACKWARD_MARK = "autograd::engine::evaluate_function: "


def module_category(name: str, module) -> str:
    """The breakdown category of the operations a module runs itself (not in its children)."""
    kind = type(module).__name__
    if name.endswith("out_head"):
        return "out_head"
    if kind in ("LayerNorm", "GELU"):
        return "norm_gelu"
    if kind == "Linear":
        return "matmul"
    if ".att" in f".{name}":  # the attention module itself and its dropout
        return "attention"
    return "elementwise"


def annotate_modules(model) -> list:
    """Forward hooks that mark each module's operations for the profiler; returns their handles."""
    from torch.autograd.profiler import record_function

    handles, open_marks = [], []

    def enter(label):
        def hook(_module, _args):
            mark = record_function(label)
            mark.__enter__()
            open_marks.append(mark)

        return hook

    def leave(_module, _args, _output):
        open_marks.pop().__exit__(None, None, None)

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(MODULE_MARK + module_category(name, module))))
        handles.append(module.register_forward_hook(leave))
    return handles


def _own_category(event) -> str | None:
    """The category an event sets for itself and everything below it, if any."""
    name = event.name
    if name.startswith(MODULE_MARK):
        return name[len(MODULE_MARK) :]
    if name in ("aten::_to_copy", "aten::to") or name.startswith(BACKWARD_MARK + "ToCopyBackward"):
        return "casts"
    if name.startswith(("Optimizer.", BACKWARD_MARK + "AccumulateGrad")):
        return "optimizer"
    if name == "data":
        return "data"
    if name.startswith(BACKWARD_MARK):
        return "backward"  # resolved through the forward operation with the same sequence number
    if any(op in name.lower().replace("_", "") for op in LOSS_OPS):
        return "cross_entropy"
    return None


def _category(event, forward_of: dict | None) -> str:
    """The innermost category on the way from ``event`` up to the root.

    Backward operations take the category of the forward operation that
    recorded the same sequence number (``forward_of``; ``None`` while that map
    is being built, when they are marked ``"backward"``).
    """
    while event is not None:
        found = _own_category(event)
        if found == "backward":
            return "backward" if forward_of is None else forward_of.get(event.sequence_nr, "other")
        if found is not None:
            return found
        event = event.cpu_parent
    return "other"


def breakdown(events, wall_us: float) -> dict:
    """Shares of ``wall_us`` per category, from the profiler's events (self time of each operation)."""
    forward_of = {}
    for event in events:
        if event.sequence_nr >= 0:
            found = _category(event, None)
            if found != "backward":
                forward_of.setdefault(event.sequence_nr, found)
    shares = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        shares[_category(event, forward_of)] += event.self_cpu_time_total
    shares["other"] += max(wall_us - sum(shares.values()), 0.0)
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}


def profile_call(model, run) -> dict:
    """Operator-level breakdown of ``run()`` (any mix of forward, backward and optimizer steps)."""
    from torch.profiler import ProfilerActivity, profile

    handles = annotate_modules(model)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            run()
            wall_us = (time.perf_counter() - t0) * 1e6
    finally:
        for handle in handles:
            handle.remove()
    return {"shares": breakdown(prof.events(), wall_us), "seconds": wall_us / 1e6}


def profile_training(model, step, batches) -> dict:
    """Breakdown of training steps on ``batches``, fed through a DataLoader as the book's loop is."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    inputs, targets = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=len(batches[0][0]))

    def run():
        batch_iter = iter(loader)
        for _ in batches:
            with torch.autograd.profiler.record_function("data"):
                x, y = next(batch_iter)
            step(x, y)

    out = profile_call(model, run)
    out["seconds"] /= len(batches)  # per step
    return out


# --------------------------------------------------------------------------- workers (subprocesses)


def _batches(cfg, n, batch_size, seed=0, device="cpu"):
    import torch

    g = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on every device
    shape = (batch_size, cfg["context_length"])
    return [
        (
            torch.randint(0, cfg["vocab_size"], shape, generator=g).to(device),
            torch.randint(0, cfg["vocab_size"], shape, generator=g).to(device),
        )
        for _ in range(n)
    ]


def _variant(variant: str, cfg: dict, opts: dict):
    """``(model, optimizer, autocast, calc_loss_batch, evaluate)`` of one variant, seeded alike."""
    import torch

    from gptlab import fast, losses
    from gptlab.model import GPTModel

    torch.manual_seed(123)
    if variant == "book":
        from llms_from_scratch import ch04, ch05  # only here: the import costs a second

        model = ch04.GPTModel(cfg).to(opts["device"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        return model, optimizer, contextlib.nullcontext, ch05.calc_loss_batch, ch05.evaluate_model
    model = GPTModel(cfg).to(opts["device"])
    if variant == "exact":
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        return model, optimizer, contextlib.nullcontext, losses.calc_loss_batch, losses.evaluate_model
    plain = variant == "fast_plain"
    bf16 = False if opts.get("fp32") else None
    model, optimizer, autocast = fast.fast_training(
        model, dict(lr=4e-4, weight_decay=0.1), bf16=bf16, compile=opts["compile"], keep_memory=not plain
    )
    loss = losses.calc_loss_batch if plain else fast.calc_loss_batch
    return model, optimizer, autocast, loss, fast.make_evaluator(autocast)


def worker_train(variant: str, opts: dict) -> dict:
    """One variant: timed training steps, timed evaluation, their breakdowns, then peak RSS."""
    import torch

    cfg, device = opts["config"], opts["device"]
    torch.set_num_threads(opts["threads"])
    # On a GPU, kernels run asynchronously: a step is timed once the device has finished it.
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    train_data = _batches(cfg, opts["warmup"] + opts["steps"], opts["batch_size"], seed=1, device=device)
    eval_data = _batches(
        cfg, opts["eval_iter"] + opts["val_batches"], opts["batch_size"], seed=2, device=device
    )
    model, optimizer, autocast, calc_loss_batch, evaluate = _variant(variant, cfg, opts)
    dtype = "bf16" if autocast is not contextlib.nullcontext else "fp32"

    def step(x, y):  # the book's train_model_simple step
        optimizer.zero_grad()
        with autocast():
            loss = calc_loss_batch(x, y, model, device)
        loss.backward()
        optimizer.step()
        return loss

    model.train()
    step_times, step_cpu, first_loss = [], [], None
    for i, (x, y) in enumerate(train_data):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step(x, y)
        sync()
        if first_loss is None:
            first_loss = loss.item()
        if i >= opts["warmup"]:
            step_times.append(time.perf_counter() - t0)
            step_cpu.append(time.process_time() - c0)

    # One evaluation as train_model_simple does it: eval_iter training batches, then the validation batches.
    train_part, val_part = eval_data[: opts["eval_iter"]], eval_data[opts["eval_iter"] :]

    def evaluation():
        return evaluate(model, train_part, val_part, device, opts["eval_iter"])

    evaluation()  # warm-up (and compilation)
    eval_times = []
    for _ in range(opts["eval_repeats"]):
        sync()
        t0 = time.perf_counter()
        eval_loss = evaluation()
        sync()
        eval_times.append(time.perf_counter() - t0)
    model.train()
    breakdowns = {}
    if opts["profile_steps"]:  # after the timed runs, so the profiler does not slow those down
        profiled = train_data[-min(opts["profile_steps"], len(train_data)) :]
        breakdowns["train"] = profile_training(model, step, profiled)
        breakdowns["eval"] = profile_call(model, evaluation)
        model.train()

    tokens_per_step = opts["batch_size"] * cfg["context_length"]
    return {
        "variant": variant,
        "dtype": dtype,
        "train_tokens_per_s": tokens_per_step / statistics.median(step_times),
        "train_tokens_per_cpu_s": tokens_per_step / statistics.median(step_cpu),
        "eval_tokens_per_s": tokens_per_step * len(eval_data) / statistics.median(eval_times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_loss": first_loss,
        "eval_loss": list(eval_loss),
        "breakdown": breakdowns,
    }


def measure_peak(opts: dict) -> dict:
    """Best matmul FLOP/s in float32 and bf16, growing the size until one product takes ~0.3 s."""
    import torch

    torch.set_num_threads(opts["threads"])
    device = opts["device"]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        n, best = 128, 0.0
        while True:
            a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
            torch.matmul(a, b)  # warm-up
            times = []
            for _ in range(3):
                sync()
                t0 = time.perf_counter()
                torch.matmul(a, b)
                sync()
                times.append(time.perf_counter() - t0)
            best = max(best, 2 * n**3 / min(times))
            if min(times) > opts["peak_seconds"] or n >= opts["peak_max_n"]:
                break
            n *= 2
        out[name] = best
        out[f"{name}_n"] = n
    return out


def run_worker(variants: list[str], opts: dict) -> list[dict]:
    """Run ``variants`` one after the other in one fresh Python process."""
    cmd = [sys.executable, __file__, "--worker", ",".join(variants), "--opts", json.dumps(opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {variants} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the book's run in fast mode


def book_run(threads: int) -> dict:
    """The book's 10-epoch Verdict run in fast mode; final losses and wall time."""
    import torch

    from gptlab.training.book import BOOK_MODEL_CONFIG, BOOK_SETTINGS
    from gptlab.training.pretrain import pretrain

    if not VERDICT.is_file():
        raise SystemExit(f"--book-run needs The Verdict at {VERDICT} (kept outside the repository)")
    torch.set_num_threads(threads)
    text = VERDICT.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    _, _, state, _ = pretrain(
        text, model_config=BOOK_MODEL_CONFIG, config=BOOK_SETTINGS, fast=True, progress=False
    )
    return {
        "final_train_loss": state.train_losses[-1],
        "final_val_loss": state.val_losses[-1],
        "wall_s": time.perf_counter() - t0,
        "how": "pretrain(fast=True)",
        "last_sample": state.samples[-1],
    }


# --------------------------------------------------------------------------- summary


def _row(metric, variant, values, ratios=None, benchmark="train", **extra):
    ratios = [r for r in (ratios or []) if r is not None and math.isfinite(r)]
    return {
        "benchmark": benchmark,
        "variant": variant,
        "metric": metric,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "ratio_vs_book": statistics.median(ratios) if ratios else float("nan"),
        "ratio_min": min(ratios) if ratios else float("nan"),
        "ratio_max": max(ratios) if ratios else float("nan"),
        "higher_is_better": HIGHER_IS_BETTER.get(metric, True),
        "runs": len(values),
        **extra,
    }


def summarise(rounds: list[dict], peaks: list[dict], cfg: dict) -> list[dict]:
    peak = {dt: max(p[dt] for p in peaks) for dt in ("fp32", "bf16")}
    train_flops = 3 * forward_flops_per_token(cfg, cfg["context_length"])
    eval_flops = forward_flops_per_token(cfg, cfg["context_length"])
    rows = [
        _row("flops_per_s", dt, [p[dt] for p in peaks], benchmark="matmul_peak") for dt in ("fp32", "bf16")
    ]
    variants = [v for v in VARIANTS if any(v in r for r in rounds)]
    for variant in variants:
        runs = [r[variant] for r in rounds if variant in r]
        dtype = runs[0]["dtype"]

        def values(key, _runs=runs):
            return [run[key] for run in _runs]

        def ratios(key, _variant=variant):
            return [r[_variant][key] / r["book"][key] for r in rounds if _variant in r and "book" in r]

        for metric in ("train_tokens_per_s", "train_tokens_per_cpu_s", "eval_tokens_per_s", "peak_rss_mb"):
            rows.append(_row(metric, variant, values(metric), ratios(metric), dtype=dtype))
        tps = values("train_tokens_per_s")
        rows.append(
            _row(
                "train_flops_per_s",
                variant,
                [t * train_flops for t in tps],
                dtype=dtype,
            )
        )
        rows.append(
            _row("train_fraction_of_peak", variant, [t * train_flops / peak[dtype] for t in tps], dtype=dtype)
        )
        eps = values("eval_tokens_per_s")
        rows.append(
            _row("eval_fraction_of_peak", variant, [t * eval_flops / peak[dtype] for t in eps], dtype=dtype)
        )
    return rows


def summarise_breakdown(rounds: list[dict]) -> list[dict]:
    """Per phase, variant and category: the median share of the time (and its seconds) over rounds."""
    rows = []
    for variant in VARIANTS:
        runs = [r[variant]["breakdown"] for r in rounds if r.get(variant, {}).get("breakdown")]
        for phase in ("train", "eval") if runs else ():
            seconds = statistics.median(run[phase]["seconds"] for run in runs)
            for category in CATEGORIES:
                shares = [run[phase]["shares"][category] for run in runs]
                rows.append(
                    {
                        "phase": phase,
                        "variant": variant,
                        "category": category,
                        "share": statistics.median(shares),
                        "share_min": min(shares),
                        "share_max": max(shares),
                        "seconds": statistics.median(shares) * seconds,
                        "phase_seconds": seconds,
                        "dtype": rounds[0][variant]["dtype"],
                    }
                )
    return rows


def print_breakdown(rows: list[dict]) -> None:
    """Where the time goes: % of a training step (or one evaluation) per category, variants side by side."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for phase, what in (("train", "one training step"), ("eval", "one evaluation")):
        cell = {(r["variant"], r["category"]): r for r in rows if r["phase"] == phase}
        if not cell:
            continue
        print(f"\nwhere the time goes: {what}, % of its wall time (torch.profiler, self time per operation)")
        width = {v: max(9, len(v) + 2) for v in variants}
        print(f"{'category':<15}" + "".join(f"{v:>{width[v]}}" for v in variants) + "  what")
        for category, what_it_is in CATEGORIES.items():
            shares = "".join(f"{100 * cell[v, category]['share']:{width[v] - 1}.1f}%" for v in variants)
            print(f"{category:<15}{shares}  {what_it_is}")
        seconds = "".join(f"{cell[v, 'other']['phase_seconds']:{width[v] - 1}.3f}s" for v in variants)
        print(f"{'(wall time)':<15}{seconds}  profiled, so a little slower than unprofiled")


def print_table(rows: list[dict]) -> None:
    def fmt(x):
        if isinstance(x, float) and not math.isfinite(x):
            return "-"
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    head = ("benchmark", "variant", "metric", "median", "min-max", "vs book (min-max)")
    print(f"{head[0]:<12} {head[1]:<8} {head[2]:<24} {head[3]:>11} {head[4]:>23} {head[5]:>24}")
    for r in rows:
        spread = f"{fmt(r['min'])}-{fmt(r['max'])}"
        ratio = fmt(r["ratio_vs_book"])
        if math.isfinite(r["ratio_vs_book"]):
            ratio += f" ({fmt(r['ratio_min'])}-{fmt(r['ratio_max'])})"
        name = f"{r['benchmark']:<12} {r['variant']:<8} {r['metric']:<24}"
        print(f"{name} {fmt(r['median']):>11} {spread:>23} {ratio:>24}")


def breakdown_path(out: Path) -> Path:
    """Where the breakdown CSV goes, beside the main one: ``train.csv`` -> ``train_breakdown.csv``."""
    return out.with_name(f"{out.stem}_breakdown{out.suffix}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, one round: runs in seconds")
    parser.add_argument("--rounds", type=int, help="rounds of A B C (default 3; smoke 1)")
    parser.add_argument("--steps", type=int, help="timed training steps per run (default 4; smoke 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument(
        "--eval-iter", type=int, help="training batches per evaluation (the book's 5; smoke 2)"
    )
    parser.add_argument("--val-batches", type=int, default=1, help="validation batches per evaluation (1)")
    parser.add_argument("--eval-repeats", type=int, help="timed evaluations per run (default 2; smoke 1)")
    parser.add_argument("--batch-size", type=int, default=2, help="the book's 2")
    parser.add_argument("--threads", type=int, help="torch threads (default 2; smoke 1)")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated subset of book,exact,fast,fast_plain (default book,exact,fast)",
    )
    parser.add_argument("--compile", action="store_true", help="fast mode with torch.compile")
    parser.add_argument(
        "--fp32", action="store_true", help="fast mode in float32, as on a CPU without native bf16"
    )
    parser.add_argument(
        "--profile-steps",
        type=int,
        help="profiled training steps per run for the breakdown (default 2; smoke 1; --compile 0; 0: none)",
    )
    parser.add_argument("--book-run", action="store_true", help="also run the book's 10 epochs in fast mode")
    parser.add_argument(
        "--out", type=Path, help="CSV (default results/bench/train.csv; smoke: train_smoke.csv)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device (cpu, cuda, cuda:1); the profile breakdown is the CPU's only",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--opts", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or REPO / "results" / "bench" / ("train_smoke.csv" if args.smoke else "train.csv")

    if args.worker:
        opts = json.loads(args.opts)
        result = [worker_train(v, opts) for v in args.worker.split(",")]
        print(json.dumps(result))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or "book" not in variants:
        parser.error(f"--variants {args.variants!r}: choose from {','.join(VARIANTS)}, including book")
    rounds_n = args.rounds or (1 if args.smoke else 3)
    opts = {
        "config": SMOKE_CONFIG if args.smoke else BOOK_CONFIG,
        "steps": args.steps or (2 if args.smoke else 4),
        "warmup": args.warmup,
        "eval_iter": args.eval_iter or (2 if args.smoke else 5),
        "val_batches": args.val_batches,
        "eval_repeats": args.eval_repeats or (1 if args.smoke else 2),
        "batch_size": args.batch_size,
        "threads": args.threads or (1 if args.smoke else 2),
        "compile": args.compile,
        "fp32": args.fp32,
        # Forward hooks would make a compiled model recompile, and the profiler's categories are the CPU's:
        # no breakdown by default with --compile or on a GPU.
        "profile_steps": args.profile_steps
        if args.profile_steps is not None
        else (0 if args.compile or args.device != "cpu" else 1 if args.smoke else 2),
        "device": args.device,
        "peak_seconds": 0.02 if args.smoke else 0.3,
        "peak_max_n": 256 if args.smoke else 16384 if args.device.startswith("cuda") else 4096,
    }
    for key in ("steps", "eval_iter", "val_batches", "eval_repeats", "batch_size", "threads"):
        if opts[key] < 1:
            parser.error(f"--{key.replace('_', '-')}={opts[key]} must be >= 1")
    if rounds_n < 1 or opts["warmup"] < 0 or opts["profile_steps"] < 0:
        parser.error("--rounds must be >= 1, --warmup and --profile-steps >= 0")

    import pandas as pd

    from gptlab.io import write_table

    load_before = os.getloadavg()
    peaks = [measure_peak(opts)]  # in this process: the workers are the ones whose RSS counts
    rounds = []
    for r in range(rounds_n):
        order = variants if r % 2 == 0 else variants[::-1]
        # Full size: a fresh process per variant, so each peak RSS is its own. Smoke: one
        # process for all (seconds matter more than RSS there).
        groups = [order] if args.smoke else [[v] for v in order]
        results = {res["variant"]: res for group in groups for res in run_worker(group, opts)}
        for variant in order:
            res = results[variant]
            print(
                f"round {r + 1}/{rounds_n} {variant:<6} train {res['train_tokens_per_s']:8.1f} tok/s  "
                f"eval {res['eval_tokens_per_s']:8.1f} tok/s  rss {res['peak_rss_mb']:7.0f} MB  "
                f"first loss {res['first_loss']:.5f}",
                flush=True,
            )
        rounds.append(results)
    if not args.smoke:
        peaks.append(measure_peak(opts))

    # Same seed, same batches: the exact mode's first loss is the book's, bit for bit.
    first = {v: rounds[0][v]["first_loss"] for v in variants}
    if "exact" in first and first["exact"] != first["book"]:
        raise SystemExit(
            f"exact mode's first loss {first['exact']!r} differs from the book's {first['book']!r}"
        )
    if "fast" in first and abs(first["fast"] - first["book"]) > 1e-2:
        raise SystemExit(
            f"fast mode's first loss {first['fast']!r} is not close to the book's {first['book']!r}"
        )

    rows = summarise(rounds, peaks, opts["config"])
    meta = {"benchmark": "training and evaluation throughput", "options": opts, "first_losses": first}
    meta["load_average"] = {"before": load_before, "after": os.getloadavg()}  # a shared machine is noisy
    meta["goals"] = "fast: train tokens/s >= 2x book, eval >= 2x, >= 40% of the matmul peak"
    if args.book_run:
        res = book_run(opts["threads"])
        print(f"book run in fast mode ({res['how']}): {res['wall_s']:.0f} s")
        print(f"last sample: {res['last_sample']!r}")
        for metric, ref in BOOK_FINAL.items():
            rows.append(
                _row(
                    metric,
                    "fast",
                    [res[metric]],
                    benchmark="book_run",
                    reference=ref,
                    delta=res[metric] - ref,
                )
            )
        rows.append(_row("wall_s", "fast", [res["wall_s"]], benchmark="book_run"))
        rows[-1]["higher_is_better"] = False
        meta["book_run"] = res
    print_table(rows)
    write_table(pd.DataFrame(rows), args.out, meta)
    print(f"\nwrote {args.out}")
    shares = summarise_breakdown(rounds)
    if shares:
        print_breakdown(shares)
        out = breakdown_path(args.out)
        write_table(pd.DataFrame(shares), out, {**meta, "categories": CATEGORIES})
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
