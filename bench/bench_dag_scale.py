"""How planning a training study grows with its number of runs: `snakemake -n` time and memory.

A study of N runs (config `runs`, the tiny offline configuration, one variant over seeds 0..N-1) is
planned with ``snakemake -n training_study`` in a fresh scratch copy of the workflow; nothing is
trained. Measured in a fresh process per repetition: wall time and peak memory (maximum resident set
of the Snakemake process, from ``/usr/bin/time``-style ``getrusage`` of the child). Reported per N:
the median over repetitions with min-max, and the time and memory per run beyond the smallest study,
which stay about constant when planning is linear. The book trains one run and has no pipeline: no
ratio to the book here.

    python bench/bench_dag_scale.py                     # 10, 100 and 1,000 runs, 3 repetitions
    python bench/bench_dag_scale.py --smoke             # 2 and 10 runs, once
    python bench/bench_dag_scale.py --runs 10,100,1000,3000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.workflow_helpers import SNAKEMAKE, prepare_tiny_study  # noqa: E402

CHILD = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"returncode": proc.returncode, "wall_s": wall, "peak_rss_mb": peak_kib / 1024,
                  "tail": (proc.stdout + proc.stderr)[-3000:]}))
"""


def plan_once(workdir: Path, config: Path) -> dict:
    """One dry run of the training study in a fresh process; its wall time and peak memory."""
    cmd = [
        SNAKEMAKE,
        "-n",
        "--quiet",
        "rules",
        "--directory",
        str(workdir),
        "--snakefile",
        str(workdir / "Snakefile"),
    ]
    cmd += ["--configfile", str(config), "--cores", "2", "training_study"]
    out = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["returncode"] != 0:
        raise RuntimeError(f"snakemake -n failed:\n{result['tail']}")
    jobs = [line.split() for line in result["tail"].splitlines() if line.startswith("train_run ")]
    result["train_jobs"] = int(jobs[0][1]) if jobs else 0
    return result


def measure(sizes: list[int], repeat: int, root: Path) -> list[dict]:
    workdir = root / "wf"
    base = prepare_tiny_study(workdir)
    rows = []
    for n in sizes:
        config = workdir / f"runs-{n}.yaml"
        settings = yaml.safe_load(base.read_text())
        settings["runs"] = {"seeds": list(range(n)), "threads": 1}
        config.write_text(yaml.safe_dump(settings))
        results = [plan_once(workdir, config) for _ in range(repeat)]
        assert all(r["train_jobs"] == n for r in results), [r["train_jobs"] for r in results]
        for metric in ("wall_s", "peak_rss_mb"):
            values = [r[metric] for r in results]
            rows.append(
                {
                    "runs": n,
                    "metric": metric,
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
            )
        print(f"{n:>6} runs: {rows[-2]['median']:.2f} s, {rows[-1]['median']:.0f} MB", flush=True)
    return rows


def per_run(rows: list[dict]) -> list[dict]:
    """Seconds and MB per run added beyond the smallest study: constant when planning is linear."""
    out = []
    for metric in ("wall_s", "peak_rss_mb"):
        series = sorted((r["runs"], r["median"]) for r in rows if r["metric"] == metric)
        (n0, v0), rest = series[0], series[1:]
        out += [
            {"runs": n, "metric": f"{metric}_per_extra_run", "median": (v - v0) / (n - n0)} for n, v in rest
        ]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="10,100,1000", help="study sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2 and 10 runs, once")
    parser.add_argument("--out", type=Path, help="CSV (default results/bench/dag_scale.csv; smoke: _smoke)")
    args = parser.parse_args(argv)
    sizes = [2, 10] if args.smoke else [int(n) for n in args.runs.split(",")]
    repeat = 1 if args.smoke else args.repeat
    out = args.out or REPO / "results" / "bench" / ("dag_scale_smoke.csv" if args.smoke else "dag_scale.csv")

    import pandas as pd

    from gptlab.device import describe_machine
    from gptlab.io import write_table

    machine = describe_machine()
    print(f"machine: {machine.get('cpu')} ({machine.get('cpu_count', '?')} CPUs)", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-dag-scale-") as tmp:
        rows = measure(sizes, repeat, Path(tmp))
    table = pd.DataFrame(rows + per_run(rows))
    print(table.to_string(index=False))
    meta = {
        "benchmark": "dag_scale",
        "machine": machine,
        "repeat": repeat,
        "seconds": time.perf_counter() - started,
    }
    meta["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_table(table, out, meta)
    print(f"wrote {out}")
    print(json.dumps({"sizes": sizes, "repeat": repeat}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
