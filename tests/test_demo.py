"""`make demo` from a fresh clone, on a machine without network: the first run the README promises.

One clone of this checkout (its working tree as it is, with the test's virtual environment linked in
as ``.venv``, so nothing is installed) runs the demo twice inside a network namespace with only a
loopback: first without ``CORPUS``, which must fail saying what to set, then with it, which must
finish, leave ``git status`` as it was, build Snakemake's report without warnings and leave the
default study in the repository root untouched. About one run of the tiny study (3-4 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gptlab import testing
from tests.workflow_helpers import REPO, TINY_GPT2_SHAPES

pytestmark = pytest.mark.timeout(2400)

VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"
# `make -o FILE`: treat the install stamp as up to date, so the linked environment is used as it is.
MAKE = ["make", "-o", ".venv/.installed-stamp"]
# Console lines that a clean run must not print (they went to the jobs' logs or were never needed).
NOISE = ("Shell command:", "oneDNN", "absl::InitializeLog", "IPKernelApp", "was never awaited", "tracemalloc")


def job_counts(output: str) -> dict[str, int]:
    """Rule → job count from Snakemake's 'Job stats' table."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def fresh_clone(dest: Path) -> Path:
    """``git clone`` of the repository with its working tree's changes (tracked and new files) on top."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src, dst = REPO / name, dest / name
        if not src.exists() and not src.is_symlink():  # deleted in the working tree
            dst.unlink(missing_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    (dest / ".venv").symlink_to(sys.prefix)
    return dest


def offline(*cmd: str) -> list[str]:
    """``cmd`` in a new network namespace whose only interface is the loopback (brought up)."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]


def git_status(repo: Path) -> list[str]:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.splitlines()


def dry_run_of_the_study(repo: Path) -> dict[str, int]:
    """The plan of a bare ``snakemake -n`` in the repository root: the default study."""
    done = subprocess.run(
        [str(repo / ".venv/bin/snakemake"), "-n"], cwd=repo, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return job_counts(done.stdout + done.stderr)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The clone, its status and study plan before, and both ``make demo`` runs (console, seconds)."""
    if shutil.which("make") is None or shutil.which("ip") is None or shutil.which("git") is None:
        pytest.skip("needs make, git and ip (iproute2)")
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout to clone")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace (unshare -n, needs root): {probe.stderr.strip()}")
    if not VERDICT.is_file():
        pytest.skip(f"no local copy of The Verdict at {VERDICT}")
    repo = fresh_clone(tmp_path_factory.mktemp("demo") / "gptlab")
    status, plan = git_status(repo), dry_run_of_the_study(repo)
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    env.pop("MAKEFLAGS", None)

    def make(*args: str, timeout: int):
        start = time.monotonic()
        done = subprocess.run(
            offline(*MAKE, "demo", *args),
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # the console as a person sees it, in order
            text=True,
            timeout=timeout,
        )
        return done, time.monotonic() - start

    without_corpus = make(timeout=900)
    with_corpus = make(f"CORPUS={VERDICT}", timeout=1500)
    return repo, status, plan, without_corpus, with_corpus


def test_offline_without_a_corpus_says_what_to_set(demo):
    _, _, _, (run, seconds), _ = demo
    console = run.stdout
    assert run.returncode != 0
    assert "make demo CORPUS=path/to/the-verdict.txt" in console, console[-3000:]
    # the download job's log, printed with the failure, names the key for snakemake itself
    assert "set corpus.local_path in the config" in console, console[-3000:]
    print(f"make demo without CORPUS, offline: failed after {seconds:.0f} s")


def test_the_demo_finishes_offline_with_a_local_corpus(demo):
    repo, _, _, _, (run, seconds) = demo
    console = run.stdout
    assert run.returncode == 0, console[-6000:]
    results = repo / "demo/results"
    for path in ("pretrain/history.csv", "resume/verification.json", "ex5_6/summary.csv"):
        assert (results / path).is_file(), path
    assert len(list((results / "reports").glob("*.html"))) == 6
    assert (repo / "demo/report.html").stat().st_size > 100_000
    gpt2 = (repo / "demo/gpt2.yaml").read_text()
    assert (repo / "demo/gpt2-mirror").as_uri() in gpt2 and all(size in gpt2 for size in TINY_GPT2_SHAPES)
    noise = [line for line in console.splitlines() if any(word in line for word in NOISE)]
    assert not noise, noise[:10]
    # the short console: a line per job that ran, the long ones' progress, two screens at most
    run_part = console.split("--report report.html", 1)[0]
    finished = re.findall(r"^\[\s*(\d+)/(\d+)\] \d\d:\d\d:\d\d  (.+?)\s+([\d.]+) (s|min)", run_part, re.M)
    assert finished and len(finished) == int(finished[-1][1]), run_part[-3000:]
    # a job that ran 30 s or more was shown while it ran (every 15 s, from 10 s on)
    for *_, job, took, unit in finished:
        if unit == "min" or float(took) >= 30:
            assert f"running {job}, " in run_part, (job, run_part[-3000:])
    assert len(console.splitlines()) <= 100, console
    print(f"make demo (continuing after the failed run): {seconds:.0f} s, {len(console.splitlines())} lines")


def test_the_report_builds_without_warnings(demo):
    _, _, _, _, (run, _) = demo
    report = run.stdout.split("--report report.html", 1)[1]  # the report's part of the console
    assert "Report created." in report, report[-3000:]
    warnings = [line for line in report.splitlines() if re.search(r"warn|missing metadata", line, re.I)]
    assert not warnings, warnings[:10]


def test_git_status_is_as_before(demo):
    repo, status, *_ = demo
    assert git_status(repo) == status


def test_the_default_study_in_the_repository_root_is_untouched(demo):
    repo, _, plan, *_ = demo
    assert sorted(p.name for p in (repo / "results").iterdir()) == ["README.md"]
    metadata = repo / ".snakemake" / "metadata"  # what the dry runs there left: no job's record
    assert not metadata.exists() or not any(metadata.iterdir())
    after = dry_run_of_the_study(repo)
    assert after == plan and after["pretrain"] == 1 and after["download_corpus"] == 1, after


def test_the_mirror_command_writes_the_tiny_releases_and_their_config(tmp_path, capfd, monkeypatch):
    assert testing.TINY_GPT2_SHAPES == TINY_GPT2_SHAPES  # the demo's releases are the tests'
    for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):  # main() sets them; restored after
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "overlay" / "gpt2.yaml"
    assert testing.main(["mirror", str(tmp_path / "mirror"), "--config", str(config), "--sizes", "124M"]) == 0
    assert yaml.safe_load(config.read_text()) == {
        "gpt2": {"sizes": ["124M"], "base_urls": [(tmp_path / "mirror").as_uri()], "check_known_sizes": False}
    }
    hparams = json.loads((tmp_path / "mirror/124M/hparams.json").read_text())
    assert hparams["n_embd"] == TINY_GPT2_SHAPES["124M"]["n_embd"]
    assert not (tmp_path / "mirror/1558M").exists()
    assert "oneDNN" not in capfd.readouterr().err  # TensorFlow's start-up lines, when it starts here
