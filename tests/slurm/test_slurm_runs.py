"""The tiny training study (2 variants x 3 seeds) through `snakemake --executor slurm` on the local cluster.

The 6 runs go out as 6 sbatch jobs, all submitted before the first finishes, each with the threads,
memory and runtime its rule declares. Once one run (INTERRUPTED_RUN) has logged a step past 0, a
watcher sends it SIGTERM, as SLURM does at a time limit or on preemption: the run saves a checkpoint
and fails, the rule's `retries` submits it again, and the new job continues from that checkpoint.
In the end every run's files and the summary equal those of the local run (the session fixture
`runs_study`).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow_helpers import TINY_RUN_NAMES, TINY_RUNS, prepare_tiny_study

from .conftest import ACCOUNT, PARTITION, SnakemakeRun, parse_scontrol, slurm_logs
from .test_slurm_pipeline import PROGRESS, parse_job_blocks

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(3600)]

RUN_TIMEOUT = 1800
INTERRUPTED_RUN = "no-dropout-seed124"
MEASURED = ["wall_seconds", "tokens_per_second", "peak_rss_mb"]


@dataclass
class RunWatcher:
    """Keeps every job's `scontrol show job` record; SIGTERMs the INTERRUPTED_RUN job once, mid-training."""

    workdir: Path
    records: dict[str, dict[str, str]] = field(default_factory=dict)
    signalled: str | None = None
    signalled_at_step: int | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "results" / "logs" / "runs" / f"{INTERRUPTED_RUN}.log"

    def poll(self) -> None:
        out = subprocess.run(
            ["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, timeout=60
        ).stdout
        for line in out.splitlines():
            job = parse_scontrol(line)
            if job.get("WorkDir") == str(self.workdir):
                self.records[job["JobId"]] = job
        if self.signalled is None:
            self._interrupt()

    def _interrupt(self) -> None:
        comment = f"rule_train_run_wildcards_{INTERRUPTED_RUN}"
        running = [
            j for j in self.records.values() if j.get("Comment") == comment and j["JobState"] == "RUNNING"
        ]
        if not running or not self.log.is_file():
            return
        steps = [int(step) for _epoch, step in PROGRESS.findall(self.log.read_text(errors="replace"))]
        if not any(steps):
            return
        (job,) = running
        subprocess.run(["scancel", "--signal=TERM", job["JobId"]], check=True, timeout=60)
        self.signalled, self.signalled_at_step = job["JobId"], max(steps)


@dataclass
class SlurmRuns:
    workdir: Path
    run: SnakemakeRun
    watch: RunWatcher
    logs: dict[str, list[str]]


@pytest.fixture(scope="module")
def slurm_runs(slurm_cluster, runs_study, tmp_path_factory) -> SlurmRuns:
    workdir = tmp_path_factory.mktemp("runs-slurm").resolve()
    config = prepare_tiny_study(workdir, runs=TINY_RUNS)
    watch = RunWatcher(workdir)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(
            slurm_cluster.snakemake,
            workdir,
            "--verbose",
            "--configfile",
            str(config),
            "--",  # the target, not one more config file
            "training_study",
            timeout=RUN_TIMEOUT,
        )
        while not future.done():
            watch.poll()
            time.sleep(1)
        watch.poll()
        run = future.result()
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
    first_done = min(
        output.find(f"Finished jobid: {m}") for m in re.findall(r"Finished jobid: (\d+)", output)
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
            assert f" --cpus-per-task={job.threads} " in call and f" -p {PARTITION} -A {ACCOUNT} " in call
        for job_id in slurm_runs.logs[f"train_run/{run}"]:
            record = slurm_runs.watch.records[job_id]
            assert (
                int(record["NumCPUs"]) == job.threads
                and record["MinMemoryNode"] == f"{job.resources['mem_mb']}M"
            )


def test_a_run_killed_by_sigterm_is_retried_and_continues_from_its_checkpoint(slurm_runs):
    watch = slurm_runs.watch
    assert watch.signalled, f"{INTERRUPTED_RUN} never ran past its first step while the watcher looked"
    first, *retries = slurm_runs.logs[f"train_run/{INTERRUPTED_RUN}"]
    assert first == watch.signalled and len(retries) == 1
    assert watch.records[first]["JobState"] == "FAILED"
    assert watch.records[retries[0]]["JobState"] == "COMPLETED"
    log = watch.log.read_text(errors="replace")
    assert re.search(
        rf"continuing from intermediate checkpoint results/runs/{INTERRUPTED_RUN}/work/latest-\w+\.pt", log
    )
    steps = [int(step) for _epoch, step in PROGRESS.findall(log)]
    assert steps and min(steps) >= watch.signalled_at_step > 0
    metrics = json.loads(
        (slurm_runs.workdir / "results" / "runs" / INTERRUPTED_RUN / "metrics.json").read_text()
    )
    assert metrics["continued_from_epoch"] is not None
    # The other runs were not touched: one submission each.
    assert all(
        len(slurm_runs.logs[f"train_run/{run}"]) == 1 for run in TINY_RUN_NAMES if run != INTERRUPTED_RUN
    )


def test_the_results_equal_the_local_run(slurm_runs, runs_study):
    local = runs_study[0]
    for run in TINY_RUN_NAMES:
        for name in ("history.csv", "samples.csv", "checkpoint.pt"):
            path = Path("results") / "runs" / run / name
            assert (slurm_runs.workdir / path).read_bytes() == (local / path).read_bytes(), path
    summaries = (
        pd.read_csv(w / "results/runs/summary.csv").drop(columns=MEASURED)
        for w in (slurm_runs.workdir, local)
    )
    pd.testing.assert_frame_equal(*summaries)
