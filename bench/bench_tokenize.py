"""Tokenizing a corpus once and streaming its windows: speed and peak memory as the corpus grows.

For each scale (1x, 10x and 100x a base of 2 MB by default) a synthetic folder
corpus is written (The Verdict's paragraphs shuffled into files of about 1 MB;
random words when The Verdict is absent), then each phase runs in a fresh
process:

* ``tokenize``: ``gptlab.corpus.tokenize_corpus`` on ``--threads`` threads:
  tokens/s and peak RSS;
* ``stream``: one pass of ``TokenCorpus.loaders``' train loader (batch 8,
  max_length 256, stride 256, no model): windows read per second and peak RSS;
* ``book`` (scales up to ``--book-max-mb``): the book's way for comparison,
  all files read and joined with ``<|endoftext|>``, ``create_dataloader_v1``
  on the whole text (one tokenization, every window held) and one pass.

Peak RSS is the child's ``ru_maxrss`` from ``os.wait4``; "delta" subtracts the
child's high-water mark after its imports, i.e. what the phase itself costs.
The claim checked: gptlab's peak RSS stays flat as the corpus grows, the
book's grows linearly. This parent imports nothing heavy while children run
(on Linux a child's ``ru_maxrss`` includes the parent's RSS at spawn time).

    python bench/bench_tokenize.py                     # 2, 20 and 200 MB (a few minutes on 2 cores)
    python bench/bench_tokenize.py --base-mb 8 --scales 1,10
    python bench/bench_tokenize.py --smoke             # 0.2 and 2 MB: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"
BATCH, MAX_LENGTH, STRIDE, TRAIN_RATIO = 8, 256, 256, 0.9
MB = 2**20

# ------------------------------------------------------------------------------------------ children


def _hwm_kib() -> int:
    """High-water RSS of this process image (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(phase: str, src: Path, dst: Path, threads: int) -> None:
    """Run one measured phase and print ``{"seconds", "tokens", "windows", "baseline_kib"}`` as JSON."""
    windows = 0
    if phase == "tokenize":
        from gptlab.corpus import tokenize_corpus
        from gptlab.tokenizer import get_tokenizer

        get_tokenizer()  # building the vocabulary is an import-time cost, not the phase's
        baseline = _hwm_kib()
        start = time.perf_counter()
        tokens = tokenize_corpus(src, dst, threads=threads, progress=False)["n_tokens"]
    elif phase == "stream":
        import torch  # noqa: F401  (imported before the baseline)

        from gptlab.corpus import TokenCorpus

        baseline = _hwm_kib()
        start = time.perf_counter()
        train, _ = TokenCorpus(dst).loaders(TRAIN_RATIO, BATCH, MAX_LENGTH, STRIDE)
        for x, _ in train:
            windows += len(x)
        tokens = windows * MAX_LENGTH
    else:
        from gptlab.corpus import corpus_sources
        from gptlab.data import create_dataloader_v1, read_text
        from gptlab.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
        baseline = _hwm_kib()
        start = time.perf_counter()
        text = "<|endoftext|>".join(read_text(p) for p in corpus_sources(src)) + "<|endoftext|>"
        loader = create_dataloader_v1(text, BATCH, MAX_LENGTH, STRIDE, tokenizer=tokenizer)
        tokens = len(loader.dataset) * MAX_LENGTH
        for x, _ in loader:
            windows += len(x)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": tokens, "windows": windows, "baseline_kib": baseline}))


# ------------------------------------------------------------------------------------------ parent


def paragraphs() -> list[str]:
    if VERDICT.is_file():
        text = VERDICT.read_text(encoding="utf-8")
        return [p.strip() for p in text.split("\n\n") if p.strip()]
    rng = random.Random(0)
    words = "the painter said every effort moves you toward a picture of his wife and the studio".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 120))) + "." for _ in range(200)]


def write_corpus(folder: Path, total_bytes: int, file_bytes: int, seed: int = 0) -> int:
    """Files of about ``file_bytes`` of shuffled paragraphs, ``total_bytes`` in all; the bytes written."""
    rng = random.Random(seed)
    paras = [p.encode() + b"\n\n" for p in paragraphs()]
    written, index = 0, 0
    while written < total_bytes:
        path = folder / f"part{index // 100:03d}" / f"doc{index:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        size, parts = 0, []
        while size < min(file_bytes, total_bytes - written):
            parts.append(rng.choice(paras))
            size += len(parts[-1])
        path.write_bytes(b"".join(parts))
        written, index = written + size, index + 1
    return written


def run_child(args: list[str]) -> tuple[dict, int]:
    """Run this script as a child; return its JSON and its peak RSS in bytes (``os.wait4``)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"child {args} failed with exit code {os.waitstatus_to_exitcode(status)}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss * 1024


def measure(scale: int, corpus_bytes: int, work: Path, args) -> list[dict]:
    src, dst = work / "src", work / "tokens"
    phases = ["tokenize", "stream"] + (["book"] if corpus_bytes <= args.book_max_mb * MB else [])
    rows = []
    for phase in phases:
        info, peak = run_child(
            ["--child", phase, "--src", str(src), "--dst", str(dst), "--threads", str(args.threads)]
        )
        base = info["baseline_kib"] * 1024
        rows.append(
            {
                "variant": f"{'book' if phase == 'book' else 'gptlab ' + phase} {scale}x",
                "phase": phase,
                "scale": scale,
                "corpus_mb": corpus_bytes / MB,
                "tokens": info["tokens"],
                "seconds": info["seconds"],
                "tokens_per_s": info["tokens"] / info["seconds"],
                "windows_per_s": info["windows"] / info["seconds"],
                "peak_rss_mb": peak / MB,
                "baseline_rss_mb": base / MB,
                "delta_rss_mb": (peak - base) / MB,
            }
        )
        r = rows[-1]
        print(
            f"  {r['variant']:>20}: {r['seconds']:7.2f} s, {r['tokens_per_s'] / 1e6:6.2f} M tokens/s, "
            f"peak {r['peak_rss_mb']:7.1f} MB, delta {r['delta_rss_mb']:7.1f} MB",
            file=sys.stderr,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="base 0.2 MB, scales 1,10: seconds")
    parser.add_argument("--base-mb", type=float, help="size of the 1x corpus in MB (default 2; smoke 0.2)")
    parser.add_argument(
        "--scales", help="comma-separated multiples of the base (default 1,10,100; smoke 1,10)"
    )
    parser.add_argument("--file-mb", type=float, default=1.0, help="size of each corpus file (default 1)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="tokenizer threads")
    parser.add_argument(
        "--book-max-mb", type=float, default=25.0, help="run the book's in-memory way up to this size"
    )
    parser.add_argument("--work", type=Path, help="scratch folder for the corpora (default: temporary)")
    parser.add_argument("--out", type=Path, help="CSV (default results/bench/tokenize.csv; smoke: _smoke)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.src, args.dst, args.threads)
        return 0
    base_mb = args.base_mb or (0.2 if args.smoke else 2.0)
    scales = [int(s) for s in (args.scales or ("1,10" if args.smoke else "1,10,100")).split(",")]
    if base_mb <= 0 or args.threads < 1 or min(scales) < 1:
        parser.error("--base-mb, --threads and --scales must be positive")
    args.out = args.out or REPO / "results" / "bench" / (
        "tokenize_smoke.csv" if args.smoke else "tokenize.csv"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)

    load_before = os.getloadavg()
    rows = []
    for scale in scales:
        work = Path(tempfile.mkdtemp(prefix="bench-tokenize-", dir=args.work))
        try:
            corpus_bytes = write_corpus(work / "src", int(scale * base_mb * MB), int(args.file_mb * MB))
            print(f"{scale}x: {corpus_bytes / MB:.1f} MB corpus in {work}", file=sys.stderr)
            rows += measure(scale, corpus_bytes, work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # Only now the heavy imports (see the module docstring).
    import pandas as pd

    from gptlab.device import describe_machine
    from gptlab.io import write_table

    table = pd.DataFrame(rows)
    book = table[table["phase"] == "book"].set_index("scale")["peak_rss_mb"]
    table["peak_rss_ratio_vs_book"] = table["peak_rss_mb"] / table["scale"].map(book)
    table.loc[table["phase"] == "book", "peak_rss_ratio_vs_book"] = float("nan")
    meta = {
        "benchmark": "token corpus: tokenize once, stream windows; tokens/s and peak RSS per corpus size",
        "base_mb": base_mb,
        "scales": scales,
        "file_mb": args.file_mb,
        "threads": args.threads,
        "loader": {
            "batch_size": BATCH,
            "max_length": MAX_LENGTH,
            "stride": STRIDE,
            "train_ratio": TRAIN_RATIO,
        },
        "text": "The Verdict's paragraphs, shuffled" if VERDICT.is_file() else "random words",
        "claim": "gptlab's peak RSS is flat in the corpus size; the book's grows linearly",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    write_table(table, args.out, meta)

    machine = describe_machine()
    print(
        f"\ntoken corpus on {machine['host']}: {machine['cpu']} ({machine['cpu_count']} CPUs), "
        f"{args.threads} tokenizer threads; load average before {load_before[0]:.2f}"
    )
    head = ("variant", "corpus MB", "tokens", "s", "M tok/s", "peak MB", "delta MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (20, 9, 11, 7, 8, 8, 8), strict=True)))
    for r in table.itertuples():
        print(
            f"{r.variant:>20} {r.corpus_mb:9.1f} {r.tokens:11d} {r.seconds:7.2f} "
            f"{r.tokens_per_s / 1e6:8.2f} {r.peak_rss_mb:8.1f} {r.delta_rss_mb:8.1f}"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
