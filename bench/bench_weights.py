"""Peak memory and time of getting GPT-2 weights into a model: gptlab vs the book.

On a synthetic checkpoint in OpenAI's exact layout (random weights of a real
GPT-2 shape, 355M by default) four steps are measured, each in a fresh
process:

* ``convert``, gptlab: TF checkpoint -> ``model.safetensors`` (streamed);
  book: ``load_gpt2_params_from_tf_ckpt`` (TF checkpoint -> NumPy dict), the
  book's counterpart of reading the checkpoint;
* ``load``, gptlab: ``load_gpt2(model.safetensors)``; book: the chapter's path,
  ``load_gpt2_params_from_tf_ckpt`` + ``GPTModel(cfg)`` +
  ``load_weights_into_gpt``. Both then read every parameter once (a sum), so
  that memory-mapped weights count as fully loaded.

Peak RSS is the child's ``ru_maxrss`` from ``os.wait4``; "delta" subtracts the
child's high-water mark after its imports (torch, and TensorFlow where the
step needs it), i.e. what the step itself costs. Runs alternate A B A B so
drifts in machine load hit both alike; the table gives medians, min-max and
gptlab/book ratios. Goal: gptlab's load delta <= 1.25 x the fp32 weight bytes.
This parent process imports nothing heavy while children run: on Linux a
child's ``ru_maxrss`` includes the parent's RSS at spawn time.

    python bench/bench_weights.py                 # 355M shape, 3 runs each
    python bench/bench_weights.py --shape 774M
    python bench/bench_weights.py --smoke         # tiny shape, 1 run each (TF imports dominate)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "124M": (768, 12, 12),
    "355M": (1024, 16, 24),
    "774M": (1280, 20, 36),
    "1558M": (1600, 25, 48),
}
SMOKE = {"n_vocab": 1000, "n_ctx": 128, "n_embd": 64, "n_head": 4, "n_layer": 2}
STEPS = ("convert", "load")
IMPLS = ("gptlab", "book")


def hparams_for(shape: str) -> dict:
    if shape == "smoke":
        return dict(SMOKE)
    d, h, n = SHAPES[shape]
    return {"n_vocab": 50257, "n_ctx": 1024, "n_embd": d, "n_head": h, "n_layer": n}


def fp32_weight_bytes(hp: dict) -> int:
    """Bytes of GPT-2's parameters in float32, the tied output head counted once."""
    d, n = hp["n_embd"], hp["n_layer"]
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return 4 * ((hp["n_vocab"] + hp["n_ctx"]) * d + n * per_layer + 2 * d)


# ------------------------------------------------------------------------------------------ children


def _hwm_kib() -> int:
    """High-water RSS of this process image (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(task: str, work: Path) -> None:
    """Run one measured step and print ``{"seconds", "baseline_kib", "hwm_kib"}`` as JSON."""
    step, impl = task.split("-")
    hp = json.loads((work / "hparams.json").read_text())
    import torch

    if impl == "book" or step == "convert":
        import tensorflow as tf
    if impl == "gptlab":
        from gptlab.convert import convert_tf_checkpoint
        from gptlab.gpt2 import load_gpt2
    else:
        from llms_from_scratch.ch04 import GPTModel
        from llms_from_scratch.ch05 import load_gpt2_params_from_tf_ckpt, load_weights_into_gpt
    baseline = _hwm_kib()
    start = time.perf_counter()
    if task == "convert-gptlab":
        convert_tf_checkpoint(work, work / "model.safetensors")
    elif task == "convert-book":
        params = load_gpt2_params_from_tf_ckpt(tf.train.latest_checkpoint(str(work)), hp)
    elif task == "load-gptlab":
        model = load_gpt2(work / "model.safetensors")
    else:
        params = load_gpt2_params_from_tf_ckpt(tf.train.latest_checkpoint(str(work)), hp)
        cfg = {
            "vocab_size": hp["n_vocab"],
            "context_length": hp["n_ctx"],
            "emb_dim": hp["n_embd"],
            "n_heads": hp["n_head"],
            "n_layers": hp["n_layer"],
            "drop_rate": 0.0,
            "qkv_bias": True,
        }
        model = GPTModel(cfg)
        model.eval()
        load_weights_into_gpt(model, params)
    if step == "load":
        with torch.no_grad():
            checksum = sum(float(p.sum()) for p in model.parameters())
        assert checksum == checksum, "NaN in the loaded weights"
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "baseline_kib": baseline, "hwm_kib": _hwm_kib()}))


# ------------------------------------------------------------------------------------------ parent


def run_child(args: list[str]) -> tuple[dict, int]:
    """Run this script as a child; return its JSON and its peak RSS in bytes (``os.wait4``)."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    lines = out.decode().strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), usage.ru_maxrss * 1024


def summarize(raw: list[dict], weight_bytes: int, shape: str):
    import pandas as pd

    frame = pd.DataFrame(raw)
    rows = []
    for (step, impl), g in frame.groupby(["step", "impl"], sort=False):
        row = {"step": step, "impl": impl, "shape": shape, "weight_bytes": weight_bytes, "runs": len(g)}
        for col in ("seconds", "peak_rss_bytes", "delta_rss_bytes"):
            row[f"{col}_median"] = statistics.median(g[col])
            row[f"{col}_min"] = g[col].min()
            row[f"{col}_max"] = g[col].max()
        row["peak_over_weights"] = row["peak_rss_bytes_median"] / weight_bytes
        row["delta_over_weights"] = row["delta_rss_bytes_median"] / weight_bytes
        rows.append(row)
    summary = pd.DataFrame(rows)
    for col in ("seconds", "peak_rss_bytes", "delta_rss_bytes"):
        book = summary[summary["impl"] == "book"].set_index("step")[f"{col}_median"]
        summary[f"{col}_ratio_vs_book"] = summary[f"{col}_median"] / summary["step"].map(book)
    return frame, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="355M", help="GPT-2 shape (default 355M)")
    parser.add_argument("--smoke", action="store_true", help="tiny shape, one run each")
    parser.add_argument("--repeats", type=int, help="runs per step and implementation (default 3; smoke 1)")
    parser.add_argument("--work", type=Path, help="folder for the synthetic checkpoint (default: temporary)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "weights.csv")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.work)
        return 0
    shape = "smoke" if args.smoke else args.shape
    repeats = args.repeats or (1 if args.smoke else 3)
    if repeats < 1:
        parser.error(f"--repeats={repeats} must be >= 1")
    hp = hparams_for(shape)
    weight_bytes = fp32_weight_bytes(hp)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="weights-", dir=args.out.parent))
    own_work = args.work is None
    try:
        if not (work / "hparams.json").is_file() or json.loads((work / "hparams.json").read_text()) != hp:
            print(f"writing a synthetic {shape} checkpoint to {work} ...", file=sys.stderr)
            code = (
                "import sys, json; from gptlab.testing import write_synthetic_gpt2_checkpoint as w;"
                "w(sys.argv[1], seed=0, **json.loads(sys.argv[2]))"
            )
            subprocess.run([sys.executable, "-c", code, str(work), json.dumps(hp)], check=True)
        # STEPS runs "convert" first: every "load" run finds model.safetensors.
        raw = []
        for step in STEPS:
            for r in range(repeats):
                for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
                    info, peak = run_child(["--child", f"{step}-{impl}", "--work", str(work)])
                    baseline = info["baseline_kib"] * 1024
                    raw.append(
                        {
                            "step": step,
                            "impl": impl,
                            "run": r,
                            "seconds": info["seconds"],
                            "peak_rss_bytes": peak,
                            "baseline_rss_bytes": baseline,
                            "delta_rss_bytes": peak - baseline,
                            "child_vmhwm_bytes": info["hwm_kib"] * 1024,
                        }
                    )
                    gib = 2**30
                    print(
                        f"  {step:>7} {impl:>6} run {r}: {info['seconds']:7.2f} s, "
                        f"peak {peak / gib:5.2f} GiB, delta {(peak - baseline) / gib:5.2f} GiB",
                        file=sys.stderr,
                    )
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)

    # Only now the heavy imports (see the module docstring).
    from gptlab.io import write_table

    frame, summary = summarize(raw, weight_bytes, shape)
    meta = {
        "benchmark": "GPT-2 weights: conversion and loading, peak RSS and seconds",
        "model_shape": shape,
        "hparams": hp,
        "fp32_weight_bytes": weight_bytes,
        "repeats": repeats,
        "goal": "gptlab load: delta RSS <= 1.25 x fp32 weight bytes",
    }
    write_table(summary, args.out, meta)
    write_table(frame, args.out.with_name(args.out.stem + "_runs.csv"), meta)

    gib = 2**30

    def spread(s, col, scale=1.0, fmt="5.2f"):
        med, lo, hi = (s[f"{col}_{k}"] / scale for k in ("median", "min", "max"))
        return f"{med:{fmt}} [{lo:.2f}-{hi:.2f}]"

    print(f"\nGPT-2 weights, {shape} shape ({weight_bytes / gib:.2f} GiB fp32), {repeats} runs", end="")
    print(" (median [min-max])")
    print(f"{'step':>7} {'impl':>6} {'seconds':>22} {'peak RSS GiB':>20} {'delta GiB':>20} {'delta/w':>7}")
    for _, s in summary.iterrows():
        sec = spread(s, "seconds", fmt="7.2f")
        peak, delta = spread(s, "peak_rss_bytes", gib), spread(s, "delta_rss_bytes", gib)
        print(f"{s.step:>7} {s.impl:>6} {sec:>22} {peak:>20} {delta:>20} {s.delta_over_weights:7.2f}")
    print("\ngptlab / book (medians):")
    for _, s in summary[summary["impl"] == "gptlab"].iterrows():
        ratios = [s[f"{c}_ratio_vs_book"] for c in ("seconds", "peak_rss_bytes", "delta_rss_bytes")]
        print(f"{s.step:>7}: time {ratios[0]:.2f}x, peak RSS {ratios[1]:.2f}x, delta RSS {ratios[2]:.2f}x")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
