"""Wall time of the whole workflow on the tiny offline configuration.

Each run prepares a fresh scratch folder as the integration tests do (a copy
of the workflow, The Verdict or a generated text as the corpus, synthetic
GPT-2 releases behind a ``file://`` mirror) and runs
``snakemake --cores 2 --configfile config/test.yaml`` (plus those settings)
from scratch. Reported: the median wall time over runs with its min-max
spread; each rule's jobs (their seconds and share of all job seconds); and
the start-up share: of each job's seconds, those before its first line of work
(starting Python, Snakemake's script preamble, the script's imports). A probe loaded
into every process of the run (``bench/startup_probe/sitecustomize.py``) records
when each job's process started, when it opened its log (each workflow script's
first line of work, right after its imports) and when it exited; it only watches.
A report's notebook kernel counts until it first reads an artifact (its start,
its parameters and imports). Each job's times go to ``<out>_jobs.csv``.
The book has no pipeline, so there is no ratio to the book here.

A target the workflow cannot produce (yet) is reported and left out instead
of failing the whole benchmark.

    python bench/bench_dag.py               # the whole DAG, 3 runs (minutes each on 2 cores)
    python bench/bench_dag.py --smoke       # one run of the first rule only: seconds
    python bench/bench_dag.py --target results/pretrain/checkpoint.pt --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.workflow_helpers import (  # noqa: E402
    TINY_GPT2_SHAPES,
    WORKFLOW_FILES,
    prepare_tiny_study,
    snakemake,
)

SMOKE_TARGET = "results/data/corpus.txt"
MISSING = re.compile(r"(?:No rule to produce|MissingInputException.*?files?:?)\s+(\S+)", re.S)


def scratch_workflow(
    root: Path, configfile: str, revision: str | None = None, mirror: Path | None = None
) -> tuple[Path, Path]:
    """A fresh copy of the workflow and the tests' offline version of ``configfile``.

    As in the integration tests: the corpus is The Verdict (or a generated text when it is
    absent) and GPT-2 comes from a ``file://`` mirror of synthetic releases in OpenAI's layout,
    fetched by the real download code: the tiny shapes, or ``mirror`` (e.g. :func:`real_mirror`).
    With ``revision``, the workflow (and its library) is that git revision's, not the checkout's.
    """
    workdir = root / "wf"
    source = export_revision(revision, root / "source") if revision else REPO
    return workdir, prepare_tiny_study(workdir, base=configfile, source=source, mirror=mirror)


def export_revision(revision: str, dest: Path) -> Path:
    """The workflow's files as of git ``revision``, written to ``dest`` (``git archive``)."""
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", revision], cwd=REPO, capture_output=True, text=True
    )
    if listed.returncode != 0:
        raise SystemExit(f"--revision {revision}: not a revision of {REPO} ({listed.stderr.strip()})")
    names = [n for n in listed.stdout.split() if n in WORKFLOW_FILES]
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, *names], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def real_mirror(folder: Path, shapes: dict | None = None) -> Path:
    """A mirror of synthetic releases at OpenAI's real shapes, one per size of the tiny study.

    Same layout and download path as OpenAI's (the 1558M release is 6.2 GB): what the default
    study's download, conversion, evaluation and generation jobs really cost, without the real
    weights. Written once and reused; a release is rewritten when its shape differs or when
    its writing was interrupted (the marker file is written last). ``shapes`` (size to hparams)
    replaces OpenAI's.
    """
    from gptlab.gpt2 import GPT2_HPARAMS
    from gptlab.testing import write_synthetic_gpt2_checkpoint

    shapes = shapes or {size: GPT2_HPARAMS[size] for size in TINY_GPT2_SHAPES}
    for size, tiny in TINY_GPT2_SHAPES.items():
        hparams, done = shapes[size], folder / size / "complete.json"
        if done.is_file() and json.loads(done.read_text()) == hparams:
            continue
        print(f"writing a synthetic {size} release at OpenAI's shape into {folder / size} ...", flush=True)
        shutil.rmtree(folder / size, ignore_errors=True)
        write_synthetic_gpt2_checkpoint(folder / size, **hparams, seed=tiny["seed"])
        done.write_text(json.dumps(hparams))
    return folder


def producible(
    targets: list[str],
    configfile: str,
    cores: int,
    revision: str | None = None,
    mirror: Path | None = None,
) -> tuple[list[str], list[str]]:
    """Split ``targets`` into those the timed workflow can build and those it cannot (dry runs)."""
    keep, dropped = list(targets), []
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        workdir, config = scratch_workflow(Path(tmp), configfile, revision, mirror)
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


PROBE = Path(__file__).resolve().parent / "startup_probe"


def job_times(records_dir: Path) -> list[dict]:
    """One dict per job (``rule``, ``job_s``, ``startup_s``, ``start``, ...) from the probe's records.

    A report's start-up adds its notebook kernel's (the kernel is the job's child process):
    ``kernel_s`` up to the kernel's first read of an artifact, ``kernel_first_cell_s`` up to its
    first cell.
    """
    records = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    kernels: dict[int, dict] = {}
    for rec in records:
        if rec["kind"] == "kernel" and rec["ready"] is not None:
            k = kernels.setdefault(rec["ppid"], {"kernel_s": 0.0, "kernel_first_cell_s": 0.0})
            k["kernel_s"] += rec["ready"] - rec["start"]
            k["kernel_first_cell_s"] += (rec.get("first_cell") or rec["ready"]) - rec["start"]
    jobs = []
    for rec in records:
        if rec["kind"] != "script" or rec["ready"] is None or rec["end"] is None:
            continue
        kernel = kernels.get(rec["pid"], {"kernel_s": 0.0, "kernel_first_cell_s": 0.0})
        jobs.append(
            {
                "rule": rec["rule"] or rec["script"],
                "job_s": rec["end"] - rec["start"],
                "startup_s": rec["ready"] - rec["start"] + kernel["kernel_s"],
                "start": rec["start"],
                "end": rec["end"],
                "script_startup_s": rec["ready"] - rec["start"],
                **kernel,
                "input": rec.get("input", []),
                "output": rec.get("output", []),
            }
        )
    return jobs


def critical_path(jobs: list[dict]) -> list[dict]:
    """The DAG's longest chain of jobs, by their measured seconds: the wall time with unlimited cores.

    A job depends on the jobs whose outputs (files, or folders holding them) it reads. Jobs are
    taken in the order they started, which puts every job after the jobs it depends on.
    """
    producer = {out: i for i, job in enumerate(jobs) for out in job["output"]}

    def made_by(path: str) -> int | None:
        for candidate in [path, *(str(parent) for parent in Path(path).parents)]:
            if candidate in producer:
                return producer[candidate]
        return None

    finish: dict[int, float] = {}
    before: dict[int, int | None] = {}
    for i in sorted(range(len(jobs)), key=lambda k: jobs[k]["start"]):
        inputs = {made_by(path) for path in jobs[i]["input"]} - {None, i}
        before[i] = max(inputs, key=finish.__getitem__, default=None)
        finish[i] = jobs[i]["job_s"] + (finish[before[i]] if before[i] is not None else 0.0)
    chain, last = [], max(finish, key=finish.__getitem__, default=None)
    while last is not None:
        chain.append(jobs[last])
        last = before[last]
    return chain[::-1]


def by_rule(jobs: list[dict]) -> dict[str, dict]:
    """Per rule: its jobs, their seconds and start-up seconds, and the shares of all job seconds."""
    total = sum(j["job_s"] for j in jobs) or float("nan")
    rules: dict[str, dict] = {}
    for j in jobs:
        r = rules.setdefault(j["rule"], {"jobs": 0, "job_s": 0.0, "startup_s": 0.0})
        r["jobs"] += 1
        r["job_s"] += j["job_s"]
        r["startup_s"] += j["startup_s"]
    for r in rules.values():
        r["share_of_jobs"] = r["job_s"] / total
        r["startup_share"] = r["startup_s"] / r["job_s"] if r["job_s"] else float("nan")
    return rules


def run_once(
    configfile: str,
    cores: int,
    targets: list[str],
    timeout: int,
    revision: str | None = None,
    mirror: Path | None = None,
) -> dict:
    # Targets go first: --configfile takes every value that follows it.
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        workdir, config = scratch_workflow(Path(tmp), configfile, revision, mirror)
        records = Path(tmp) / "startup"
        records.mkdir()
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "GPTLAB_BENCH_STARTUP")}
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBE), saved["PYTHONPATH"]]))
        os.environ["GPTLAB_BENCH_STARTUP"] = str(records)
        try:
            t0 = time.time()
            result = snakemake(
                workdir, *targets, "--cores", str(cores), "--configfile", str(config), timeout=timeout
            )
            wall = time.time() - t0
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if result.returncode != 0:
            said = result.stdout + result.stderr
            raise SystemExit(f"snakemake failed (exit {result.returncode}):\n{said[-4000:]}")
        jobs = job_times(records)
        count = re.search(r"^total\s+(\d+)\s*$", result.stdout + result.stderr, re.M)
        first = min((j["start"] for j in jobs), default=t0) - t0
        return {
            "wall_s": wall,
            "jobs": jobs,
            "count": int(count.group(1)) if count else 0,
            "first_job_s": first,
            "critical_path": critical_path(jobs),
        }


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


def rows_of(results: list[dict], label: str) -> list[dict]:
    """The CSV's rows: the whole run, then each rule (medians over runs)."""
    whole = [by_rule([{**j, "rule": "all"} for j in r["jobs"]]).get("all") for r in results]
    whole = [w for w in whole if w]
    rows = [
        row("workflow", "wall_s", [r["wall_s"] for r in results], targets=label, jobs=results[0]["count"])
    ]
    rows.append(row("workflow", "until_first_job_s", [r["first_job_s"] for r in results], targets=label))
    if whole:
        for metric in ("job_s", "startup_s", "startup_share"):
            rows.append(row("workflow", metric, [w[metric] for w in whole], targets=label))
    paths = [r["critical_path"] for r in results]
    rows.append(
        row("workflow", "critical_path_s", [sum(j["job_s"] for j in p) for p in paths], targets=label)
    )
    per_run = [by_rule(r["jobs"]) for r in results]
    for rule in sorted({name for rules in per_run for name in rules}):
        found = [rules[rule] for rules in per_run if rule in rules]
        for metric in ("job_s", "share_of_jobs", "startup_s", "startup_share"):
            rows.append(
                row(f"rule:{rule}", metric, [f[metric] for f in found], targets=label, jobs=found[0]["jobs"])
            )
        on_path = [sum(j["job_s"] for j in p if j["rule"] == rule) for p in paths]
        rows.append(row(f"rule:{rule}", "critical_path_s", on_path, targets=label, jobs=found[0]["jobs"]))
    return rows


def print_table(rows: list[dict]) -> None:
    table: dict[str, dict] = {}
    for r in rows:
        table.setdefault(r["variant"], {"jobs": r.get("jobs")})[r["metric"]] = r["median"]
    whole = table.pop("workflow")
    print(
        f"\nwall time {whole['wall_s']:.1f} s, {whole.get('jobs') or 0:.0f} jobs; "
        f"the first job started after {whole['until_first_job_s']:.1f} s"
    )
    if "job_s" in whole:
        print(
            f"job seconds {whole['job_s']:.1f}, of which start-up {whole['startup_s']:.1f} "
            f"({100 * whole['startup_share']:.0f} %)"
        )
    print(
        f"critical path {whole['critical_path_s']:.1f} s: the longest chain of jobs, "
        "the wall time with unlimited cores"
    )
    print(
        f"\n{'rule':<28} {'jobs':>4} {'job s':>8} {'share':>7} {'start-up s':>11} {'start-up share':>15}"
        f" {'on critical path s':>19}"
    )
    for name, t in sorted(table.items(), key=lambda kv: -kv[1]["job_s"]):
        print(
            f"{name.removeprefix('rule:'):<28} {t['jobs']:>4.0f} {t['job_s']:>8.1f} "
            f"{100 * t['share_of_jobs']:>6.1f}% {t['startup_s']:>11.1f} {100 * t['startup_share']:>14.0f}%"
            f" {t['critical_path_s']:>19.1f}"
        )
    print("(medians over runs; a job's seconds run from its process's start to its exit)")


def print_critical_path(chain: list[dict]) -> None:
    print("\ncritical path of the last run:")
    for job in chain:
        print(f"  {job['rule']:<28} {job['job_s']:>8.1f} s  -> {', '.join(job['output'][:1])}")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def resolve(revision: str) -> str:
    return git("rev-parse", revision) or revision


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
    parser.add_argument(
        "--gpt2-shapes",
        choices=("tiny", "real"),
        default="tiny",
        help="synthetic GPT-2 releases at the tiny study's shapes (default) or at OpenAI's real ones",
    )
    parser.add_argument(
        "--mirror",
        type=Path,
        default=REPO / "results" / "bench" / "gpt2-real-mirror",
        help="where the real-shape releases are written once and reused (about 7 GB)",
    )
    parser.add_argument(
        "--revision", help="time the workflow of this git revision (e.g. an older commit) instead"
    )
    args = parser.parse_args(argv)
    args.out = args.out or REPO / "results" / "bench" / ("dag_smoke.csv" if args.smoke else "dag.csv")
    runs = args.runs or (1 if args.smoke else 3)
    if runs < 1 or args.cores < 1:
        parser.error("--runs and --cores must be >= 1")
    if not (REPO / args.configfile).is_file():
        parser.error(f"--configfile {args.configfile}: no such file under {REPO}")
    if shutil.which(str(Path(sys.executable).with_name("snakemake"))) is None:
        raise SystemExit("snakemake is not installed next to this Python; install the 'pipeline' extra")
    mirror = real_mirror(args.mirror) if args.gpt2_shapes == "real" else None
    targets = args.target or ([SMOKE_TARGET] if args.smoke else [])
    label = " ".join(targets) or "all"

    if args.target:  # the smoke target is known to exist: no dry run needed
        targets, dropped = producible(targets, args.configfile, args.cores, args.revision, mirror)
        for t in dropped:
            print(f"skipping target {t}: the workflow has no rule that produces it (yet)")
        if not targets:
            print("nothing left to run; no CSV written")
            return 0
        label = " ".join(targets)

    # What is timed, named before the runs: the checkout may change while they run.
    timed = {
        "revision": resolve(args.revision or "HEAD"),
        "uncommitted_changes": args.revision is None and bool(git("status", "--porcelain")),
    }
    load_before = os.getloadavg()
    results = []
    for i in range(runs):
        res = run_once(args.configfile, args.cores, targets, args.timeout, args.revision, mirror)
        print(f"run {i + 1}/{runs}: {res['wall_s']:.1f} s, {res['count']} jobs", flush=True)
        results.append(res)

    import pandas as pd

    from gptlab.io import write_table

    rows = rows_of(results, label)
    print_table(rows)
    jobs = [
        {"run": i, **job, "on_critical_path": any(job is j for j in r["critical_path"])}
        for i, r in enumerate(results)
        for job in r["jobs"]
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(jobs).drop(columns=["input", "output"]).to_csv(
        args.out.with_name(args.out.stem + "_jobs.csv"), index=False
    )
    print_critical_path(results[-1]["critical_path"])
    meta = {
        "benchmark": "workflow wall time",
        "configfile": args.configfile,
        "cores": args.cores,
        "gpt2_shapes": args.gpt2_shapes,
        **timed,
    }
    meta["load_average"] = {"before": load_before, "after": os.getloadavg()}
    write_table(pd.DataFrame(rows), args.out, {**meta, "targets": label, "runs": runs})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
