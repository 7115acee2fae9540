"""The tiny training study (2 variants x 3 seeds) through `snakemake --executor slurm` on the local cluster.

The 6 runs go out as 6 sbatch jobs, all submitted before the first finishes, each with the threads,
memory and runtime its rule declares. Once one run (INTERRUPTED_RUN) has logged a step past 0, a
watcher sends it SIGTERM (to the job's step, as the pipeline's SLURM test does): the run saves a
checkpoint and fails, the rule's `retries` runs it again, and the new attempt continues from that
checkpoint. Snakemake inside the job honours the rule's `retries` too, so the retry may run in the
same allocation; after a time limit, which ends the allocation, the main Snakemake submits a new job.
In the end every run's files and the summary equal those of the local run (the session fixture
`runs_study`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow_helpers import TINY_RUN_NAMES, TINY_RUNS, prepare_tiny_study

from .conftest import ACCOUNT, PARTITION, SnakemakeRun, slurm_logs
from .test_slurm_pipeline import PROGRESS, Watcher, parse_job_blocks

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(3600)]

RUN_TIMEOUT = 1800
INTERRUPTED_RUN = "no-dropout-seed124"
MEASURED = ["wall_seconds", "tokens_per_second", "peak_rss_mb"]


@dataclass
class SlurmRuns:
    workdir: Path
    run: SnakemakeRun
    watch: Watcher
    logs: dict[str, list[str]]


@pytest.fixture(scope="module")
def slurm_runs(slurm_cluster, runs_study, tmp_path_factory) -> SlurmRuns:
    workdir = tmp_path_factory.mktemp("runs-slurm").resolve()
    config = prepare_tiny_study(workdir, runs=TINY_RUNS)
    log = workdir / "results" / "logs" / "runs" / f"{INTERRUPTED_RUN}.log"
    watch = Watcher(workdir, interrupt_log=log, comment=f"rule_train_run_wildcards_{INTERRUPTED_RUN}")
    # "--" ends the config files: the target follows.
    run = watch.run(
        slurm_cluster, "--verbose", "--configfile", str(config), "--", "training_study", timeout=RUN_TIMEOUT
    )
    assert run.returncode == 0, f"the training study failed on SLURM:\n{run.output[-8000:]}"
    return SlurmRuns(workdir, run, watch, slurm_logs(workdir))


def run_calls(study: SlurmRuns) -> dict[str, list[str]]:
    calls: dict[str, list[str]] = {}
    for call in study.run.sbatch_calls():
        if m := re.search(r"--comment rule_train_run_wildcards_(\S+) ", call):
            calls.setdefault(m.group(1), []).append(call)
    return calls


def test_the_runs_go_out_as_jobs_at_once_with_their_resources(slurm_runs):
    calls = run_calls(slurm_runs)
    assert sorted(calls) == sorted(TINY_RUN_NAMES)
    output = slurm_runs.run.output
    # Snakemake's job ids of the runs, and where the first of them is reported finished.
    blocks = re.findall(r"^rule train_run:\n((?:    .*\n)*)", output, flags=re.MULTILINE)
    jobids = {m.group(1) for block in blocks if (m := re.search(r"^    jobid: (\d+)$", block, re.MULTILINE))}
    assert len(jobids) == len(TINY_RUN_NAMES), jobids
    first_done = min(
        output.find(f"Finished jobid: {j} ") for j in jobids if f"Finished jobid: {j} " in output
    )
    for run in TINY_RUN_NAMES:
        first_call = output.find(calls[run][0])
        assert 0 <= first_call < first_done, f"{run} was submitted only after a job had finished"
    jobs = {j.key: j for j in parse_job_blocks(output) if j.rule == "train_run"}
    for run in TINY_RUN_NAMES:
        job = jobs[f"train_run/{run}"]
        assert job.threads == TINY_RUNS["threads"]
        for call in calls[run]:
            assert f" --mem {job.resources['mem_mb']} " in call and f" -t {job.resources['runtime']} " in call
            assert f" --cpus-per-task={job.threads} " in call, call
            assert f" -p {PARTITION} " in call and f" -A {ACCOUNT} " in call, call
        for job_id in slurm_runs.logs[f"train_run/{run}"]:
            record = slurm_runs.watch.records[job_id]
            assert (
                int(record["NumCPUs"]) == job.threads
                and record["MinMemoryNode"] == f"{job.resources['mem_mb']}M"
            )


def test_a_run_killed_by_sigterm_is_retried_and_continues_from_its_checkpoint(slurm_runs):
    watch = slurm_runs.watch
    assert watch.signalled, f"{INTERRUPTED_RUN} never ran past its first step while the watcher looked"
    job_ids = slurm_runs.logs[f"train_run/{INTERRUPTED_RUN}"]
    assert job_ids[0] == watch.signalled and len(job_ids) <= 2, job_ids
    assert watch.records[job_ids[-1]]["JobState"] == "COMPLETED"
    # The attempt that got SIGTERM saved a checkpoint and failed; Snakemake reported it, ran the rule again.
    assert "Error in rule train_run:" in slurm_runs.run.output + _job_logs(slurm_runs, INTERRUPTED_RUN)
    log = watch.interrupt_log.read_text(errors="replace")  # the retry's: it rewrites the log
    work = f"results/runs/{INTERRUPTED_RUN}/work/"
    assert re.search(rf"continuing from intermediate checkpoint {re.escape(work)}latest-\w+\.pt", log), log[
        :2000
    ]
    steps = [int(step) for _epoch, step in PROGRESS.findall(log)]
    assert steps and min(steps) >= watch.signalled_at_step > 0
    metrics = json.loads(
        (slurm_runs.workdir / "results" / "runs" / INTERRUPTED_RUN / "metrics.json").read_text()
    )
    assert metrics["continued_from_epoch"] is not None
    # The other runs were not touched: one attempt each.
    for run in TINY_RUN_NAMES:
        if run != INTERRUPTED_RUN:
            assert len(slurm_runs.logs[f"train_run/{run}"]) == 1
            assert "continuing from intermediate" not in _run_log(slurm_runs, run)


def _run_log(study: SlurmRuns, run: str) -> str:
    return (study.workdir / "results" / "logs" / "runs" / f"{run}.log").read_text(errors="replace")


def _job_logs(study: SlurmRuns, run: str) -> str:
    """The SLURM job logs of ``run`` (Snakemake's output inside its jobs)."""
    folder = study.workdir / ".snakemake" / "slurm_logs" / "rule_train_run" / run
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))


def assert_same_checkpoint(a, b, where=""):
    """Equal content, key order included. (The bytes of a resumed run's checkpoint differ: pickle
    shares equal strings only when they are the same object, which restoring from a file changes.)"""
    import torch

    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same_checkpoint(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_checkpoint(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def test_the_results_equal_the_local_run(slurm_runs, runs_study):
    from gptlab.training.checkpoint import load_checkpoint

    local = runs_study[0]
    for run in TINY_RUN_NAMES:
        folder = Path("results") / "runs" / run
        for name in ("history.csv", "samples.csv"):
            assert (slurm_runs.workdir / folder / name).read_bytes() == (local / folder / name).read_bytes()
        checkpoints = (load_checkpoint(w / folder / "checkpoint.pt") for w in (slurm_runs.workdir, local))
        assert_same_checkpoint(*checkpoints, where=run)
        if run != INTERRUPTED_RUN:  # trained in one go: the same bytes
            checkpoint = folder / "checkpoint.pt"
            assert (slurm_runs.workdir / checkpoint).read_bytes() == (local / checkpoint).read_bytes(), run
    summaries = (
        pd.read_csv(w / "results/runs/summary.csv").drop(columns=MEASURED)
        for w in (slurm_runs.workdir, local)
    )
    pd.testing.assert_frame_equal(*summaries)
