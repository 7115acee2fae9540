"""Wall time of the whole workflow on the tiny offline configuration.

Each run prepares a fresh scratch folder as the integration tests do (a copy
of the workflow, The Verdict or a generated text as the corpus, synthetic
GPT-2 releases behind a ``file://`` mirror) and runs
``snakemake --cores 2 --configfile config/test.yaml`` (plus those settings)
from scratch. Reported: the median wall time over runs with its min-max
spread, and each rule's own time from Snakemake's ``benchmark:`` files. The
book has no pipeline, so there is no ratio to the book here.

A target the workflow cannot produce (yet) is reported and left out instead
of failing the whole benchmark.

    python bench/bench_dag.py               # the whole DAG, 3 runs (minutes each on 2 cores)
    python bench/bench_dag.py --smoke       # one run of the first rule only: seconds
    python bench/bench_dag.py --target results/pretrain/checkpoint.pt --runs 1
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.workflow_helpers import prepare_tiny_study, snakemake  # noqa: E402

SMOKE_TARGET = "results/data/corpus.txt"
MISSING = re.compile(r"(?:No rule to produce|MissingInputException.*?files?:?)\s+(\S+)", re.S)


def scratch_workflow(root: Path, configfile: str) -> tuple[Path, Path]:
    """A fresh copy of the workflow and the tests' offline version of ``configfile``.

    As in the integration tests: the corpus is The Verdict (or a generated text when it is
    absent) and GPT-2 comes from a ``file://`` mirror of synthetic releases in OpenAI's layout,
    fetched by the real download code.
    """
    workdir = root / "wf"
    return workdir, prepare_tiny_study(workdir, base=configfile)


def producible(targets: list[str], configfile: str, cores: int) -> tuple[list[str], list[str]]:
    """Split ``targets`` into those the workflow can build and those it cannot (dry runs)."""
    keep, dropped = list(targets), []
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        workdir, config = scratch_workflow(Path(tmp), configfile)
        while True:
            result = snakemake(workdir, *keep, "-n", "--cores", str(cores), "--configfile", str(config))
            if result.returncode == 0:
                return keep, dropped
            said = result.stdout + result.stderr  # Snakemake 9 logs its errors to stdout
            match = MISSING.search(said)
            missing = match.group(1).strip("'\",") if match else None
            if missing is None or missing not in keep:
                raise SystemExit(
                    "the workflow cannot be planned with this configuration; snakemake said:\n" + said[-3000:]
                )
            keep.remove(missing)
            dropped.append(missing)
            if not keep:
                return keep, dropped


def run_once(configfile: str, cores: int, targets: list[str], timeout: int) -> dict:
    # Targets go first: --configfile takes every value that follows it.
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        workdir, config = scratch_workflow(Path(tmp), configfile)
        t0 = time.perf_counter()
        result = snakemake(
            workdir, *targets, "--cores", str(cores), "--configfile", str(config), timeout=timeout
        )
        wall = time.perf_counter() - t0
        if result.returncode != 0:
            said = result.stdout + result.stderr
            raise SystemExit(f"snakemake failed (exit {result.returncode}):\n{said[-4000:]}")
        rules = {}
        for tsv in sorted((workdir / "results" / "benchmarks").glob("*.tsv")):
            lines = tsv.read_text().splitlines()
            if len(lines) >= 2:
                header, values = lines[0].split("\t"), lines[1].split("\t")
                rules[tsv.stem] = float(values[header.index("s")])
        jobs = re.search(r"^total\s+(\d+)\s*$", result.stdout + result.stderr, re.M)
        return {"wall_s": wall, "rules": rules, "jobs": int(jobs.group(1)) if jobs else 0}


def row(variant, metric, values, **extra):
    return {
        "benchmark": "dag",
        "variant": variant,
        "metric": metric,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "ratio_vs_book": float("nan"),  # the book has no workflow to compare with
        "higher_is_better": False,
        "runs": len(values),
        **extra,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help=f"one run of {SMOKE_TARGET} only (seconds)")
    parser.add_argument("--runs", type=int, help="runs (default 3; smoke 1)")
    parser.add_argument("--target", action="append", help="targets (default: the whole DAG); repeatable")
    parser.add_argument("--configfile", default="config/test.yaml", help="relative to the repository")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--out", type=Path, help="CSV (default results/bench/dag.csv; smoke: dag_smoke.csv)")
    args = parser.parse_args(argv)
    args.out = args.out or REPO / "results" / "bench" / ("dag_smoke.csv" if args.smoke else "dag.csv")
    runs = args.runs or (1 if args.smoke else 3)
    if runs < 1 or args.cores < 1:
        parser.error("--runs and --cores must be >= 1")
    if not (REPO / args.configfile).is_file():
        parser.error(f"--configfile {args.configfile}: no such file under {REPO}")
    if shutil.which(str(Path(sys.executable).with_name("snakemake"))) is None:
        raise SystemExit("snakemake is not installed next to this Python; install the 'pipeline' extra")
    targets = args.target or ([SMOKE_TARGET] if args.smoke else [])
    label = " ".join(targets) or "all"

    if args.target:  # the smoke target is known to exist: no dry run needed
        targets, dropped = producible(targets, args.configfile, args.cores)
        for t in dropped:
            print(f"skipping target {t}: the workflow has no rule that produces it (yet)")
        if not targets:
            print("nothing left to run; no CSV written")
            return 0
        label = " ".join(targets)

    load_before = os.getloadavg()
    results = []
    for i in range(runs):
        res = run_once(args.configfile, args.cores, targets, args.timeout)
        print(f"run {i + 1}/{runs}: {res['wall_s']:.1f} s, {res['jobs']} jobs", flush=True)
        results.append(res)

    rows = [row("workflow", "wall_s", [r["wall_s"] for r in results], targets=label, jobs=results[0]["jobs"])]
    for rule in sorted({name for r in results for name in r["rules"]}):
        times = [r["rules"][rule] for r in results if rule in r["rules"]]
        rows.append(row(f"rule:{rule}", "wall_s", times, targets=label))

    import pandas as pd

    from gptlab.io import write_table

    print(f"\n{'variant':<24} {'median s':>10} {'min-max s':>20}")
    for r in rows:
        print(f"{r['variant']:<24} {r['median']:>10.1f} {r['min']:>9.1f}-{r['max']:<9.1f}")
    meta = {"benchmark": "tiny-config workflow wall time", "configfile": args.configfile, "cores": args.cores}
    meta["load_average"] = {"before": load_before, "after": os.getloadavg()}
    write_table(pd.DataFrame(rows), args.out, {**meta, "targets": label, "runs": runs})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
