"""The SLURM profile on a real local cluster, proven on a tiny workflow (tests/slurm/toy/Snakefile).

Each job of the toy workflow records, from inside the job, its SLURM variables and its own
`scontrol show job` record; the tests compare those with what the rules declared.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ACCOUNT, CLUSTER_SH, PARTITION, SnakemakeRun, parse_scontrol, slurm_logs

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

TOY = Path(__file__).with_name("toy") / "Snakefile"

# What the toy rules declare: SLURM log key -> (output, threads, mem_mb, gpu). The runs cap threads
# at the node's CPUs (`--max-threads`), so on a one-CPU node "wide" gets one.
COMPUTE_JOBS = {
    "work/small": ("work/small.json", 1, 300, False),
    "work/wide": ("work/wide.json", 2, 700, False),
    "gpu": ("gpu.json", 1, 400, True),
    "gather": ("gather.json", 1, 200, False),
}
RUNTIME_MINUTES = 5


@dataclass
class ToyRun:
    workdir: Path
    run: SnakemakeRun
    logs: dict[str, list[str]]

    def record(self, output: str) -> dict:
        return json.loads((self.workdir / output).read_text(encoding="utf-8"))

    def sbatch_call(self, comment: str) -> str:
        calls = [c for c in self.run.sbatch_calls() if f"--comment {comment} " in c]
        assert len(calls) == 1, f"expected one sbatch call for {comment}, got {calls}"
        return calls[0]


def _comment(key: str) -> str:
    """The `--comment` the plugin gives a job: rule_<rule> or rule_<rule>_wildcards_<values>."""
    rule, _, wildcards = key.partition("/")
    return f"rule_{rule}_wildcards_{wildcards}" if wildcards else f"rule_{rule}"


@pytest.fixture(scope="module")
def toy(slurm_cluster, tmp_path_factory) -> ToyRun:
    workdir = tmp_path_factory.mktemp("toy-slurm")
    run = slurm_cluster.snakemake(workdir, "--verbose", snakefile=TOY, timeout=300)
    assert run.returncode == 0, f"toy workflow failed on SLURM:\n{run.output[-6000:]}"
    return ToyRun(workdir=workdir, run=run, logs=slurm_logs(workdir))


def test_every_compute_job_went_through_slurm(toy, slurm_cluster):
    assert set(toy.logs) == set(COMPUTE_JOBS), f"SLURM logs: {toy.logs}"
    job_ids = []
    for key, (output, *_rest) in COMPUTE_JOBS.items():
        (log_id,) = toy.logs[key]
        seen_inside = toy.record(output)["env"]["SLURM_JOB_ID"]
        assert seen_inside == log_id, f"{key}: job saw SLURM_JOB_ID={seen_inside}, log is {log_id}.log"
        assert f"has been submitted with SLURM jobid {log_id} " in toy.run.output
        job = slurm_cluster.show_job(log_id)
        assert job["JobName"] == toy.run.run_id, f"{key}: job {log_id} is not from this run"
        assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), job
        job_ids.append(log_id)
    assert len(set(job_ids)) == len(job_ids), "each compute job must be its own SLURM job"


def test_declared_memory_cpus_and_runtime_reached_the_job(toy, slurm_cluster):
    for key, (output, declared_threads, mem_mb, _gpu) in COMPUTE_JOBS.items():
        threads = min(declared_threads, slurm_cluster.cpus)
        call = toy.sbatch_call(_comment(key))
        assert f" --mem {mem_mb} " in call, call
        assert f" -t {RUNTIME_MINUTES} " in call, call
        assert f" -p {PARTITION} " in call and f" -A {ACCOUNT} " in call, call

        record = toy.record(output)
        # The job's own record, read while it ran: what SLURM actually allocated.
        job = parse_scontrol(record["scontrol"])
        assert job["MinMemoryNode"] == f"{mem_mb}M", (key, job["MinMemoryNode"])
        assert int(job["NumCPUs"]) == threads, (key, job["NumCPUs"])
        assert job["TimeLimit"] == f"00:{RUNTIME_MINUTES:02d}:00", (key, job["TimeLimit"])
        assert (job["Partition"], job["Account"]) == (PARTITION, ACCOUNT), key
        assert record["threads"] == threads
        assert record["env"]["SLURM_CPUS_PER_TASK"] == str(threads), (key, record["env"])
        assert f"--cpus-per-task={threads} " in call, call


def test_gpu_request_reached_gpus(toy):
    for key, (output, _threads, _mem, gpu) in COMPUTE_JOBS.items():
        call = toy.sbatch_call(_comment(key))
        record = toy.record(output)
        job = parse_scontrol(record["scontrol"])
        if gpu:
            assert " --gpus=1" in call, call
            assert job.get("TresPerJob") == "gres:gpu:1", record["scontrol"]
            # slurmd handed one of the node's (fake) GPUs to the job.
            assert record["env"]["CUDA_VISIBLE_DEVICES"] in {"0", "1"}, record["env"]
        else:
            assert "--gpus" not in call, call
            assert "TresPerJob" not in job, record["scontrol"]
            assert record["env"]["CUDA_VISIBLE_DEVICES"] is None, (key, record["env"])


def test_localrules_ran_on_the_submitting_host(toy):
    record = toy.record("fetched.json")
    assert record["host"] == socket.gethostname()
    assert all(value is None for value in record["env"].values()), record["env"]
    assert "scontrol" not in record
    assert "fetch" not in toy.logs
    assert not [c for c in toy.run.sbatch_calls() if "rule_fetch" in c]


def test_failing_rule_is_reported_as_failed(slurm_cluster, tmp_path):
    # `ok` does not depend on `boom`: with the profile's keep-going it still finishes, and the
    # profile's `retries: 1` submits `boom` a second time before giving up.
    run = slurm_cluster.snakemake(tmp_path, "boom.txt", "ok.txt", snakefile=TOY, timeout=300)
    assert run.returncode != 0, run.output[-4000:]
    assert "Error in rule boom:" in run.output, run.output[-4000:]
    logs = slurm_logs(tmp_path)
    assert set(logs) == {"boom", "ok"}, logs
    assert len(logs["boom"]) == 2, f"expected two attempts of boom: {logs}"
    for job_id in logs["boom"]:
        assert f"SLURM-job '{job_id}' failed" in run.output
        assert f"external_jobid: {job_id}" in run.output
        assert slurm_cluster.show_job(job_id)["JobState"] == "FAILED"
        log = tmp_path / ".snakemake" / "slurm_logs" / "rule_boom" / f"{job_id}.log"
        assert "boom: failing on purpose" in log.read_text(encoding="utf-8")
    assert not (tmp_path / "boom.txt").exists()
    assert (tmp_path / "ok.txt").read_text(encoding="utf-8") == "ok\n"
    assert slurm_cluster.show_job(logs["ok"][0])["JobState"] == "COMPLETED"


def test_requeued_job_runs_again_under_the_same_id_and_the_workflow_finishes(slurm_cluster, tmp_path):
    # `scontrol requeue` is what preemption with requeue does to a job: SLURM kills the running
    # attempt and queues the same job (same id) again. Snakemake must keep waiting for it instead of
    # reporting a failure, and the second attempt must see what the first left outside the outputs.
    attempts = tmp_path / "requeue-attempts.txt"
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(
            slurm_cluster.snakemake, tmp_path, "--verbose", "requeue.txt", snakefile=TOY, timeout=480
        )
        deadline = time.monotonic() + 240
        while not attempts.is_file() and not future.done() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert attempts.is_file(), "the requeue job never started"
        job_id = attempts.read_text(encoding="utf-8").split()[0]
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60, capture_output=True)
        run = future.result()
    assert run.returncode == 0, run.output[-4000:]
    call = [c for c in run.sbatch_calls() if "--comment rule_requeue " in c]
    assert len(call) == 1 and "--requeue" in call[0], call  # one submission; the profile's --requeue
    lines = (tmp_path / "requeue.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [f"{job_id} Restarts=0", f"{job_id} Restarts=1"], lines
    job = slurm_cluster.show_job(job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", job


def test_cluster_start_is_idempotent(slurm_cluster):
    before = subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True, text=True)
    assert before.returncode == 0, before.stdout + before.stderr
    again = subprocess.run(["bash", str(CLUSTER_SH), "start"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stderr, f"start restarted a running daemon: {again.stderr}"
    after = subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True, text=True)
    assert after.stdout == before.stdout
