"""A real single-node SLURM cluster for the tests in this directory, and Snakemake runs on it.

The `slurm_cluster` fixture installs and starts the cluster with `cluster.sh` (root and apt needed;
without them the tests skip, except in CI, where they fail). It stops the daemons at the end only if
it started them, so a cluster started beforehand (`bash tests/slurm/cluster.sh start`) is reused and
left running. `slurm_cluster.snakemake(workdir, ...)` runs Snakemake with the project's SLURM profile
plus the overrides this cluster needs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = Path(__file__).with_name("cluster.sh")
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

PARTITION = "debug"
ACCOUNT = "gptlab-test"  # without an accounting database SLURM accepts any account
# No accounting database here, so job status comes from squeue; the plugin only trusts squeue when
# MinJobAge (600 s in cluster.sh) is at least 3x the first-check delay, else it silently uses sacct.
STATUS_INIT_SECONDS = 2


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slurm: runs jobs on a real local SLURM cluster (root and apt; started by tests/slurm/cluster.sh)",
    )


def _unavailable(reason: str):
    """Skip, or fail in CI, where these tests must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, so the SLURM tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


def _cluster_sh(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


def profile_default_resources(overrides: dict) -> list[str]:
    """The SLURM profile's `default-resources`, updated with `overrides`, as command-line words.

    A command-line `--default-resources` replaces the profile's whole list, so the profile's values
    are repeated. Strings are quoted because Snakemake evaluates each value as Python.
    """
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text(encoding="utf-8"))
    resources = {**profile.get("default-resources", {}), **overrides}
    return [f"{key}={value!r}" for key, value in resources.items()]


@dataclass
class SnakemakeRun:
    """A finished Snakemake run: exit status and combined stdout/stderr."""

    args: list[str]
    returncode: int
    output: str

    @property
    def run_id(self) -> str | None:
        """The SLURM plugin's run id, which is also the job name of every job it submitted."""
        match = re.search(r"SLURM run ID: (\S+)", self.output)
        return match.group(1) if match else None

    def sbatch_calls(self) -> list[str]:
        """The sbatch command lines the plugin logged (needs `--verbose`)."""
        return re.findall(r"^sbatch call: (sbatch .*)$", self.output, flags=re.MULTILINE)


@dataclass
class SlurmCluster:
    node: str
    cpus: int  # CPUs of the single node: no job may ask for more
    started_here: bool

    def snakemake(
        self,
        workdir: Path,
        *args: str,
        snakefile: Path | None = None,
        timeout: int = 600,
        resources: dict | None = None,
        max_threads: int | None = None,
    ) -> SnakemakeRun:
        """Run `snakemake --executor slurm --workflow-profile workflow/profiles/slurm` in `workdir`.

        Adds what this cluster needs on top of the profile: status through squeue with a short first
        check, partition `debug`, a test account, successful jobs' logs kept, and `--max-threads` at
        the node's CPU count (sbatch rejects a job asking for more CPUs than any node has), or at
        `max_threads` when that is lower. `resources` updates the profile's default resources. The
        run is wrapped in `timeout -k`: a Snakemake waiting on job status it can never get ignores
        SIGTERM.
        """
        default_resources = profile_default_resources(
            {"slurm_partition": PARTITION, "slurm_account": ACCOUNT, **(resources or {})}
        )
        cmd = [
            "timeout",
            "-k",
            "15",
            str(timeout),
            str(SNAKEMAKE),
            "--executor",
            "slurm",
            "--workflow-profile",
            str(SLURM_PROFILE),
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            str(STATUS_INIT_SECONDS),
            "--slurm-keep-successful-logs",
            "--max-threads",
            str(min(self.cpus, max_threads or self.cpus)),
            "--default-resources",
            *default_resources,
        ]
        if snakefile is not None:
            cmd += ["--snakefile", str(snakefile)]
        cmd += list(args)
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout + 60,
        )
        if proc.returncode in (124, 137):
            pytest.fail(
                f"snakemake did not finish within {timeout}s (killed by timeout):\n{_tail(proc.stdout)}",
                pytrace=False,
            )
        return SnakemakeRun(args=cmd, returncode=proc.returncode, output=proc.stdout)

    @staticmethod
    def show_job(job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict; finished jobs stay visible for MinJobAge seconds."""
        out = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", str(job_id)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return parse_scontrol(out)

    @staticmethod
    def show_node(node: str) -> dict[str, str]:
        """`scontrol show node` as a dict."""
        out = subprocess.run(
            ["scontrol", "show", "node", "--oneliner", node], capture_output=True, text=True, check=True
        ).stdout
        return parse_scontrol(out)


def parse_scontrol(record: str) -> dict[str, str]:
    """Parse one `scontrol show job|node --oneliner` record into {key: value}."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z/:_]+)=(\S*)", record))


def slurm_logs(workdir: Path) -> dict[str, list[str]]:
    """SLURM job ids per job from `.snakemake/slurm_logs/rule_<rule>[/<wildcards>]/<jobid>.log`.

    Keys are `<rule>` or `<rule>/<wildcards>`; the lists are sorted numerically.
    """
    root = workdir / ".snakemake" / "slurm_logs"
    found: dict[str, list[str]] = {}
    for log in root.rglob("*.log"):
        parts = log.relative_to(root).parts
        key = "/".join([parts[0].removeprefix("rule_"), *parts[1:-1]])
        found.setdefault(key, []).append(log.stem)
    return {key: sorted(ids, key=int) for key, ids in found.items()}


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM cluster on 127.0.0.1 (installed and started when needed)."""
    if os.geteuid() != 0:
        _unavailable("the local SLURM cluster needs root (it installs packages and starts daemons)")
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        _unavailable("apt-get is not available to install munge/slurmctld/slurmd/slurm-client")
    if shutil.which("timeout") is None:
        _unavailable("coreutils `timeout` is not on PATH (every Snakemake run is wrapped in it)")
    if not SNAKEMAKE.is_file() or importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _unavailable(f"snakemake and its SLURM executor plugin are not installed next to {sys.executable}")

    installed = _cluster_sh("install", timeout=900)
    if installed.returncode != 0:
        _unavailable(f"installing SLURM with apt failed:\n{_tail(installed.stdout + installed.stderr)}")

    already_running = _cluster_sh("status", timeout=60).returncode == 0
    if not already_running:
        started = _cluster_sh("start", timeout=300)
        if started.returncode != 0:
            pytest.fail(
                f"the local SLURM cluster did not start:\n{_tail(started.stdout + started.stderr)}",
                pytrace=False,
            )
    node = socket.gethostname().split(".")[0]
    cpus = int(SlurmCluster.show_node(node)["CPUTot"])
    yield SlurmCluster(node=node, cpus=cpus, started_here=not already_running)
    if not already_running:
        _cluster_sh("stop", timeout=120)
