"""The study's tiny offline configuration through `snakemake --executor slurm` on the local cluster.

One SLURM run of the whole DAG serves every test here. Before it, a local dry-run lists the jobs
and what each rule declares (threads, memory, runtime, GPU). While it runs, a watcher keeps each
of its jobs' `scontrol show job` record (there is no accounting database, so this is the only
record) and, once pretraining has logged a step past 0, sends the pretrain job SIGTERM with
`scancel --signal=TERM`, as SLURM does at a time limit or on preemption. Training writes a
checkpoint and exits non-zero, the job fails, and the profile's `retries: 1` submits it again; the
new job continues from that checkpoint. In the end the artifacts must equal those of the local
run of the same configuration (the session fixture `tiny_study`).
"""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import REPO, prepare_tiny_study, snakemake

from .conftest import ACCOUNT, PARTITION, SLURM_PROFILE, SnakemakeRun, parse_scontrol, slurm_logs

# Setting up includes the local run of `tiny_study` (when no other test made it yet) and the
# SLURM run; each is a few minutes of training on two cores.
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(3600)]

RUN_TIMEOUT = 1800
INTERRUPTED_RULE = "pretrain"
# States in which a job may still run (anything else is final for this test's purposes).
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}
PROGRESS = re.compile(r"Ep (\d+) \(Step (\d+)\)")

# CSV results that may legitimately differ between two runs of the same configuration (timings,
# absolute paths), each with the reason. None do today: every CSV is compared byte for byte.
# (Benchmarks, which hold timings, are .tsv files; `.meta.json` sidecars may hold paths and
# versions and are not compared.)
CSV_EXCLUDED: dict[str, str] = {}


# --- what the workflow declares ----------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One job as Snakemake prints it: `rule <name>:` (or `localrule`) and its indented fields."""

    rule: str
    key: str  # <rule> or <rule>/<wildcard values>, as in .snakemake/slurm_logs/rule_<key>/
    local: bool
    threads: int
    resources: dict[str, str]
    log: str | None


JOB_BLOCK = re.compile(r"^(local)?(?:rule|checkpoint) (\w+):\n((?:    \S.*\n)*)", re.MULTILINE)


def parse_job_blocks(output: str) -> list[Job]:
    """Every job block Snakemake printed, in order (a retried job is printed once per attempt)."""
    jobs = []
    for local, rule, body in JOB_BLOCK.findall(output):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, flags=re.MULTILINE))
        values = re.findall(r"\w+=([^,]*)", fields.get("wildcards", ""))
        # The plugin's log directory: wildcard values joined by "_", "/" replaced by "_".
        key = "/".join([rule, *(["_".join(values).replace("/", "_")] if values else [])])
        jobs.append(
            Job(
                rule=rule,
                key=key,
                local=bool(local),
                threads=int(fields.get("threads", 1)),
                resources=dict(re.findall(r"(\w+)=([^,]*)", fields.get("resources", ""))),
                log=fields.get("log"),
            )
        )
    return jobs


def parse_jobs(output: str) -> dict[str, Job]:
    """Jobs printed by Snakemake, by key (for a retried job, its last attempt)."""
    return {job.key: job for job in parse_job_blocks(output)}


def localrules(workdir: Path) -> set[str]:
    """Rules named in `localrules:` directives of the Snakefile and the rule files."""
    names: set[str] = set()
    for path in [workdir / "Snakefile", *sorted((workdir / "workflow").rglob("*.smk"))]:
        text = path.read_text(encoding="utf-8")
        for inline, block in re.findall(r"^localrules:(.*)\n((?:[ \t]+[\w, \t]*\n)*)", text, re.MULTILINE):
            names.update(re.findall(r"\w+", inline + block))
    return names


def default_target(workdir: Path) -> str:
    """The rule marked `default_target: True` (no action: Snakemake finishes it itself)."""
    text = (workdir / "Snakefile").read_text(encoding="utf-8")
    match = re.search(r"^rule (\w+):\s*\n\s+default_target:\s*True", text, re.MULTILINE)
    assert match, "the Snakefile has no rule with `default_target: True`"
    return match.group(1)


def base_config() -> dict:
    return yaml.safe_load((REPO / "config" / "test.yaml").read_text(encoding="utf-8"))


def config_has_gpu_switch() -> bool:
    """Whether the configuration has `resources.gpu`, the switch for the rules' GPU requests."""
    return "gpu" in (base_config().get("resources") or {})


def profile_default(key: str) -> str:
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text(encoding="utf-8"))
    return str(profile["default-resources"][key])


def minutes(time_limit: str) -> int:
    """scontrol's TimeLimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = time_limit.rpartition("-")
    hours, mins, secs = (int(part) for part in clock.split(":"))
    return int(days or 0) * 24 * 60 + hours * 60 + mins + (secs > 0)


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Watcher:
    """Polls `scontrol show job` during the run; interrupts one training job once, mid-training."""

    workdir: Path
    interrupt_log: Path  # the interrupted job's log, where training reports its steps
    comment: str = f"rule_{INTERRUPTED_RULE}"  # the job to interrupt, by the comment the plugin gives it
    records: dict[str, dict[str, str]] = field(default_factory=dict)
    signalled: str | None = None
    signalled_at_step: int | None = None
    first_attempt_log: str | None = None

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
        elif self.first_attempt_log is None and self.records[self.signalled]["JobState"] not in ACTIVE_STATES:
            # Read before the retry, which the main Snakemake submits only after its next status
            # query, truncates the log.
            self.first_attempt_log = self.interrupt_log.read_text(encoding="utf-8", errors="replace")

    def run(self, cluster, *args, **options) -> SnakemakeRun:
        """``cluster.snakemake(self.workdir, *args, **options)``, polled every second while it runs."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(cluster.snakemake, self.workdir, *args, **options)
            while not future.done():
                self.poll()
                time.sleep(1)
            self.poll()
            return future.result()

    def _interrupt(self) -> None:
        running = [
            job
            for job in self.records.values()
            if job.get("Comment") == self.comment and job["JobState"] == "RUNNING"
        ]
        if not running or not self.interrupt_log.is_file():
            return
        steps = [
            int(step) for _epoch, step in PROGRESS.findall(self.interrupt_log.read_text(errors="replace"))
        ]
        if not any(steps):  # wait until training is past its first step: mid-run, not at start-up
            return
        (job,) = running
        # Without --batch/--full, scancel signals the job's steps: here the `srun` step that runs
        # the rule (Snakemake and the training script), not the batch shell around it.
        subprocess.run(["scancel", "--signal=TERM", job["JobId"]], check=True, timeout=60)
        self.signalled, self.signalled_at_step = job["JobId"], max(steps)


@dataclass
class SlurmStudy:
    workdir: Path
    config: Path
    declared: dict[str, Job]  # from the local dry-run, by key
    local_rules: set[str]
    default_target: str
    run: SnakemakeRun
    jobs: dict[str, Job]  # as the SLURM run printed them (the last attempt of each)
    attempts: dict[str, list[Job]]  # every attempt, in submission order
    logs: dict[str, list[str]]  # SLURM job ids per key, from .snakemake/slurm_logs/
    watch: Watcher
    max_threads: int
    node_mem_mb: int
    gpu: bool  # whether the run switched the rules' GPU requests on (resources.gpu=1)

    def compute_jobs(self) -> dict[str, Job]:
        return {key: job for key, job in self.jobs.items() if not job.local}

    def sbatch_calls(self, key: str) -> list[str]:
        rule, _, wildcards = key.partition("/")
        comment = f"rule_{rule}_wildcards_{wildcards}" if wildcards else f"rule_{rule}"
        return [call for call in self.run.sbatch_calls() if f"--comment {comment} " in call]


@pytest.fixture(scope="module")
def study(slurm_cluster, tiny_study, tmp_path_factory) -> SlurmStudy:
    _local_workdir, _local_config, local_result = tiny_study
    workdir = tmp_path_factory.mktemp("study-slurm").resolve()
    # The configuration of the local run; with the GPU switch on, if the configuration has one:
    # the fake GPUs satisfy the requests, and `device: cpu` keeps the numbers those of the CPU.
    gpu = config_has_gpu_switch()
    config = prepare_tiny_study(workdir, **({"resources": {"gpu": 1}} if gpu else {}))

    dry = snakemake(
        workdir, "--dry-run", "--forceall", "--cores", "1024", "--workflow-profile", "none",
        "--configfile", str(config), timeout=300,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-4000:]
    declared = parse_jobs(dry.stdout + dry.stderr)
    assert declared, f"no jobs in the dry-run:\n{dry.stderr[-4000:]}"

    # The same threads per job as the local run (torch's results may depend on its thread count).
    local_args = list(local_result.args)
    max_threads = int(local_args[local_args.index("--cores") + 1])
    node_mem_mb = int(slurm_cluster.show_node(slurm_cluster.node)["RealMemory"])
    # sbatch rejects a job asking for more memory than the node has: cap those rules at the node.
    capped = sorted(
        {
            f"{job.rule}:mem_mb={node_mem_mb}"
            for job in declared.values()
            if job.resources.get("mem_mb", "").isdigit() and int(job.resources["mem_mb"]) > node_mem_mb
        }
    )

    watch = Watcher(workdir=workdir, interrupt_log=workdir / declared[INTERRUPTED_RULE].log)
    run = watch.run(
        slurm_cluster,
        "--verbose",  # the plugin logs each sbatch command line
        "--configfile",
        str(config),
        *(["--set-resources", *capped] if capped else []),
        timeout=RUN_TIMEOUT,
        max_threads=max_threads,
    )
    attempts: dict[str, list[Job]] = {}
    for job in parse_job_blocks(run.output):
        attempts.setdefault(job.key, []).append(job)
    assert run.returncode == 0, f"the study failed on SLURM:\n{run.output[-8000:]}"
    return SlurmStudy(
        workdir=workdir,
        config=config,
        declared=declared,
        local_rules=localrules(workdir),
        default_target=default_target(workdir),
        run=run,
        jobs=parse_jobs(run.output),
        attempts=attempts,
        logs=slurm_logs(workdir),
        watch=watch,
        max_threads=max_threads,
        node_mem_mb=node_mem_mb,
        gpu=gpu,
    )


# --- the tests ---------------------------------------------------------------------------------


def test_every_compute_job_went_through_slurm(study):
    assert set(study.jobs) == set(study.declared), "the SLURM run ran other jobs than the dry-run listed"
    expected_local = {
        key for key, job in study.declared.items() if job.rule in study.local_rules | {study.default_target}
    }
    local = {key for key, job in study.jobs.items() if job.local}
    assert local == expected_local, "only localrules and the default target may run on the submitting host"
    compute = study.compute_jobs()
    assert INTERRUPTED_RULE in compute and len(compute) >= 2, sorted(compute)

    assert set(study.logs) == set(compute), f"SLURM logs {sorted(study.logs)} vs jobs {sorted(compute)}"
    for key in compute:
        job_ids = study.logs[key]
        assert len(study.sbatch_calls(key)) == len(job_ids), (key, job_ids)
        for job_id in job_ids:
            assert f"has been submitted with SLURM jobid {job_id} " in study.run.output, (key, job_id)
            record = study.watch.records.get(job_id)
            assert record, f"{key}: SLURM job {job_id} was never seen by scontrol"
            assert record["JobName"] == study.run.run_id, (key, record)
            assert record["StdOut"].endswith(f"/rule_{key}/{job_id}.log"), (key, record["StdOut"])
        final = study.watch.records[job_ids[-1]]
        assert (final["JobState"], final["ExitCode"]) == ("COMPLETED", "0:0"), (key, final)
    for key in expected_local:
        assert not study.sbatch_calls(key), f"{key} is a localrule but was submitted"
    all_ids = [job_id for ids in study.logs.values() for job_id in ids]
    assert len(set(all_ids)) == len(all_ids), "each job is its own SLURM job"


# Rules that load a model or train declare their memory and runtime; the light ones (tables,
# figures, reports) take the profile's default-resources.
HEAVY_RULES = {
    "pretrain",
    "resume",
    "verify_resume",
    "convert_gpt2",
    "evaluate_losses",
    "pizza_next_token",
    "sweep",
    "determinism",
    "sizes",
}


def test_heavy_rules_declare_memory_and_runtime_and_light_ones_take_the_profiles(study):
    declared = {key: job for key, job in study.declared.items() if key in study.compute_jobs()}
    for key, job in declared.items():
        names = {name for name in ("mem_mb", "runtime") if name in job.resources}
        if job.rule in HEAVY_RULES:
            assert names == {"mem_mb", "runtime"} or job.rule == "verify_resume", (key, job.resources)
        else:
            assert not names, f"{key} is light but declares {names}: use the profile's default-resources"
    assert {job.rule for job in declared.values()} >= HEAVY_RULES
    assert int(profile_default("mem_mb")) >= 2000 and int(profile_default("runtime")) >= 15


def test_declared_threads_memory_runtime_and_gpus_reached_each_job(study):
    for key in study.compute_jobs():
        declared = study.declared[key]
        attempts, calls, job_ids = study.attempts[key], study.sbatch_calls(key), study.logs[key]
        assert len(attempts) == len(calls) == len(job_ids), (key, calls, job_ids)
        for job, call, job_id in zip(attempts, calls, job_ids, strict=True):
            # What the rule declared, as Snakemake evaluated it for the job: threads up to
            # --max-threads, the profile's defaults for resources the rule leaves out, memory
            # capped at the node's. Values that depend on input sizes are <TBD> in the dry-run.
            assert job.threads == min(declared.threads, study.max_threads), (key, job)
            expected = {
                "mem_mb": declared.resources.get("mem_mb", profile_default("mem_mb")),
                "runtime": declared.resources.get("runtime", profile_default("runtime")),
                "gpu": declared.resources.get("gpu", "0"),
            }
            if expected["mem_mb"] != "<TBD>":
                expected["mem_mb"] = str(min(int(expected["mem_mb"]), study.node_mem_mb))
            for name, value in expected.items():
                if value != "<TBD>":
                    assert job.resources.get(name, "0") == value, (key, name, job.resources)
            mem_mb, runtime = int(job.resources["mem_mb"]), int(job.resources["runtime"])
            gpu = int(job.resources.get("gpu", 0))

            assert f" --mem {mem_mb} " in call, (key, call)
            assert f" -t {runtime} " in call, (key, call)
            assert f" --cpus-per-task={job.threads} " in call, (key, call)
            assert f" -p {PARTITION} " in call and f" -A {ACCOUNT} " in call, (key, call)
            assert (f" --gpus={gpu}" in call) == bool(gpu), (key, call)
            # What SLURM actually allocated, as scontrol showed it while the job existed.
            record = study.watch.records[job_id]
            assert record["MinMemoryNode"] == f"{mem_mb}M", (key, record)
            assert int(record["NumCPUs"]) == job.threads, (key, record)
            assert minutes(record["TimeLimit"]) == runtime, (key, record)
            assert (record["Partition"], record["Account"]) == (PARTITION, ACCOUNT), (key, record)
            tres = record.get("TresPerJob", "")
            assert bool(re.search(rf"gpu:{gpu}$", tres)) == bool(gpu), (key, tres)


def test_pretraining_requests_a_gpu_when_switched_on(study):
    if not study.gpu:
        pytest.skip(
            "config/test.yaml has no `resources.gpu` switch, so no rule can be made to request a GPU; "
            "`gpu=1` reaching --gpus is proven on the toy workflow (test_slurm_toy.py)"
        )
    gpu_jobs = sorted(key for key, job in study.compute_jobs().items() if int(job.resources.get("gpu", 0)))
    assert INTERRUPTED_RULE in gpu_jobs, f"with resources.gpu=1 only {gpu_jobs} requested a GPU"


def test_csv_results_equal_the_local_run(study, tiny_study):
    local_workdir = tiny_study[0]

    def csvs(root: Path) -> set[str]:
        found = {str(p.relative_to(root)) for p in (root / "results").rglob("*.csv")}
        return found - set(CSV_EXCLUDED)

    names = csvs(local_workdir)
    assert names, "the local run wrote no CSV results"
    assert csvs(study.workdir) == names
    differing = [
        name
        for name in sorted(names)
        if (study.workdir / name).read_bytes() != (local_workdir / name).read_bytes()
    ]
    assert not differing, f"CSV results differ between the SLURM and the local run: {differing}"


def test_final_checkpoints_equal_the_local_run(study, tiny_study):
    import torch

    from gptlab.training.checkpoint import load_checkpoint

    local_workdir = tiny_study[0]
    names = sorted(
        str(p.relative_to(local_workdir))
        for p in (local_workdir / "results").rglob("checkpoint.pt")
        if "work" not in p.parts
    )
    assert names
    for name in names:
        ours = load_checkpoint(study.workdir / name)["model_state_dict"]
        theirs = load_checkpoint(local_workdir / name)["model_state_dict"]
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), f"{name}: weights differ"


def test_sigterm_mid_training_fails_the_job_and_the_retry_continues_from_its_checkpoint(study, tiny_study):
    watch = study.watch
    assert watch.signalled, (
        f"{INTERRUPTED_RULE} never ran past its first step while the watcher looked; "
        f"SLURM jobs seen: {watch.records.keys()}"
    )
    first, *retries = study.logs[INTERRUPTED_RULE]
    assert first == watch.signalled and len(retries) == 1, study.logs[INTERRUPTED_RULE]

    # The interrupted attempt: training stopped at a step, saved, exited non-zero; the job failed
    # and Snakemake reported it.
    interrupted = watch.records[first]
    assert interrupted["JobState"] == "FAILED" and interrupted["ExitCode"] != "0:0", interrupted
    assert f"Error in rule {INTERRUPTED_RULE}:" in study.run.output
    assert f"SLURM-job '{first}' failed" in study.run.output
    assert watch.first_attempt_log is not None
    stopped = re.search(r"stopped at epoch (\d+), step (\d+)", watch.first_attempt_log)
    assert stopped, watch.first_attempt_log[-3000:]
    stopped_step = int(stopped.group(2))
    assert stopped_step >= watch.signalled_at_step > 0

    # The retry: a new SLURM job that continued from the intermediate checkpoint, not from step 0.
    retry = watch.records[retries[0]]
    assert retry["JobState"] == "COMPLETED", retry
    work_dir = f"results/{INTERRUPTED_RULE}/work/"
    log = (study.workdir / study.declared[INTERRUPTED_RULE].log).read_text(encoding="utf-8", errors="replace")
    assert re.search(rf"continuing from intermediate checkpoint {re.escape(work_dir)}latest-\w+\.pt", log), (
        log[:2000]
    )
    steps = [int(step) for _epoch, step in PROGRESS.findall(log)]
    assert steps and min(steps) >= stopped_step, (stopped_step, steps)
    assert (study.workdir / work_dir).is_dir()

    # And the history equals the uninterrupted local run's, byte for byte.
    history = f"results/{INTERRUPTED_RULE}/history.csv"
    assert (study.workdir / history).read_bytes() == (tiny_study[0] / history).read_bytes()


def test_after_the_slurm_run_nothing_is_left_to_do(study):
    # Nothing the jobs did on the compute node (params, code, software environment, mtimes) makes
    # Snakemake want to redo a job afterwards, the retried one included.
    dry = snakemake(
        study.workdir, "--dry-run", "--cores", "1", "--workflow-profile", "none",
        "--configfile", str(study.config), timeout=300,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-4000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-4000:]
