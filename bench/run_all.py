"""Run every benchmark (``bench/bench_*.py``) and draw one figure of the ratios to the book.

    python bench/run_all.py                 # full size (tens of minutes on 2 cores)
    python bench/run_all.py --smoke         # seconds-long smoke sizes: keeps the scripts working
    python bench/run_all.py --only train,dag --out-dir /tmp/bench

Each script writes its CSV into ``--out-dir`` (``--out <dir>/<name>.csv``,
where ``bench_<name>.py``; ``<name>_smoke.csv`` and ``summary_smoke.png`` for
smoke runs); the figure ``summary.png`` there shows every
ratio to the book's code that the CSVs hold. Two CSV layouts are understood:
the long one (columns ``benchmark, variant, metric, median, min, max,
ratio_vs_book``) and wide ones with ``*ratio_vs_book`` or ``speedup_vs_book``
columns, labelled by their text columns. Scripts that fail are reported and
the others still run; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
LONG_COLUMNS = ("benchmark", "variant", "metric", "median", "min", "max", "ratio_vs_book")
# Words in a metric or column name that say smaller is better.
# Columns that identify a row of a wide CSV (used for its label).
NUMERIC_IDS = ("batch_size", "new_tokens")
ID_COLUMNS = ("method", "variant", "impl", "step", "shape", *NUMERIC_IDS)
LOWER_IS_BETTER = ("seconds", "_s_", "rss", "bytes", "_mb", "time", "wall")


def scripts(only: list[str] | None = None) -> dict[str, Path]:
    """``name -> path`` of the benchmark scripts (``bench_<name>.py``)."""
    found = {p.stem.removeprefix("bench_"): p for p in sorted(BENCH.glob("bench_*.py"))}
    if only:
        unknown = [n for n in only if n not in found]
        if unknown:
            raise SystemExit(f"--only {','.join(unknown)}: no such benchmark; choose from {','.join(found)}")
        found = {n: found[n] for n in only}
    return found


def csv_path(out_dir: Path, name: str, smoke: bool) -> Path:
    """Where a benchmark's CSV goes; smoke runs never overwrite full-size results."""
    return out_dir / f"{name}{'_smoke' if smoke else ''}.csv"


def run_script(name: str, path: Path, smoke: bool, out_dir: Path, timeout: int) -> tuple[bool, float, str]:
    cmd = [sys.executable, str(path), "--out", str(csv_path(out_dir, name, smoke))]
    if smoke:
        cmd.append("--smoke")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, f"timed out after {timeout} s"
    wall = time.perf_counter() - t0
    csv_path(out_dir, name, smoke).with_suffix(".log").write_text(proc.stdout + proc.stderr)
    return proc.returncode == 0, wall, (proc.stdout + proc.stderr)[-2000:]


def _lower_is_better(name: str) -> bool:
    name = f"_{name.lower()}_"
    return any(word in name for word in LOWER_IS_BETTER)


def ratios(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Rows ``label, ratio, higher_is_better`` of one benchmark's CSV (book rows left out)."""
    out = []
    if set(LONG_COLUMNS) <= set(df.columns):
        for _, r in df.iterrows():
            ratio = pd.to_numeric(r["ratio_vs_book"], errors="coerce")
            if str(r["variant"]) == "book" or not (ratio > 0 and math.isfinite(ratio)):
                continue
            hib = r.get("higher_is_better")
            hib = (not _lower_is_better(str(r["metric"]))) if pd.isna(hib) else str(hib).lower() == "true"
            out.append((f"{name}: {r['variant']} {r['metric']}", float(ratio), hib))
        return pd.DataFrame(out, columns=["label", "ratio", "higher_is_better"])
    ratio_cols = [c for c in df.columns if c.endswith(("ratio_vs_book", "speedup_vs_book"))]
    text_cols = [
        c
        for c in df.columns
        if not pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
    ]
    key_cols = [c for c in ID_COLUMNS if c in df.columns] or text_cols[:1]
    for _, r in df.iterrows():
        if any(str(r[c]).startswith("book") for c in key_cols):
            continue  # the reference itself (ratio 1)
        ident = " ".join(f"{c}={r[c]}" if c in NUMERIC_IDS else str(r[c]) for c in key_cols)
        for c in ratio_cols:
            ratio = pd.to_numeric(r[c], errors="coerce")
            if ratio > 0 and math.isfinite(ratio):
                what = (
                    c.removesuffix("_vs_book").removesuffix("_ratio") if c.endswith("ratio_vs_book") else ""
                )
                # A ratio of times or memory is better below 1; a speed-up above 1.
                hib = c.startswith("speedup") or not _lower_is_better(what)
                out.append((f"{name}: {ident} {what}".rstrip(), float(ratio), hib))
    return pd.DataFrame(out, columns=["label", "ratio", "higher_is_better"])


def collect(out_dir: Path, names, smoke: bool = False) -> pd.DataFrame:
    frames = []
    for name in names:
        csv = csv_path(out_dir, name, smoke)
        if csv.is_file():
            frames.append(ratios(name, pd.read_csv(csv)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["label", "ratio"])


def draw(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Horizontal bars of the ratios (log scale); green where gptlab does better than the book."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(table), 1)
    fig, ax = plt.subplots(figsize=(9, 0.32 * n + 1.6))
    if len(table):
        better = [(r > 1) == hib for r, hib in zip(table["ratio"], table["higher_is_better"], strict=True)]
        colors = ["tab:green" if b else "tab:red" for b in better]
        ax.barh(range(len(table)), table["ratio"], color=colors)
        ax.set_yticks(range(len(table)), table["label"], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        for i, r in enumerate(table["ratio"]):
            ax.text(r, i, f" {r:.3g}", va="center", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no ratios yet", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("gptlab's value / the book's value (same run; green: gptlab better)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="every script in its seconds-long smoke size")
    parser.add_argument("--only", help="comma-separated benchmark names (bench_<name>.py)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "results" / "bench")
    parser.add_argument("--timeout", type=int, help="seconds per script (default 7200; smoke 600)")
    parser.add_argument("--figure-only", action="store_true", help="redraw the figure from existing CSVs")
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    found = scripts(only)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or (600 if args.smoke else 7200)

    failed = []
    if not args.figure_only:
        for name, path in found.items():
            print(f"== {name} ({'smoke' if args.smoke else 'full'})", flush=True)
            ok, wall, tail = run_script(name, path, args.smoke, args.out_dir, timeout)
            print(f"   {'ok' if ok else 'FAILED'} in {wall:.1f} s", flush=True)
            if not ok:
                failed.append(name)
                print(tail, flush=True)

    table = collect(args.out_dir, found, args.smoke)
    title = "gptlab vs the book" + (" (smoke sizes: not meaningful)" if args.smoke else "")
    figure = draw(table, args.out_dir / f"summary{'_smoke' if args.smoke else ''}.png", title)
    if len(table):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"\nwrote {figure}")
    if failed:
        print(f"failed: {', '.join(failed)} (logs in {args.out_dir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
