"""bench/gpu_check.sh: skips cleanly without CUDA, and its steps run (on the CPU, at smoke sizes).

On a machine without a GPU this checks what can be checked there: the script's
syntax, the skip message and exit status, that each step's command accepts the
options the script gives it, that the same steps run end to end on the CPU
(``--cpu-smoke``), and that the device checks fail when a tolerance is broken.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def gpu_check(*args, timeout=600, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO,
        env={**os.environ, "PY": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the script would use it")
def test_without_cuda_it_says_so_and_succeeds(tmp_path):
    result = gpu_check(OUT=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "no CUDA device: skipping the GPU part" in result.stdout
    assert not any(tmp_path.iterdir())  # nothing was run


def test_an_unknown_option_is_a_usage_error():
    result = gpu_check("--bogus")
    assert result.returncode == 2 and "unknown option '--bogus'" in result.stderr


def test_each_step_accepts_its_options(tmp_path):
    """The dry run lists the GPU steps; every script exists and its --help names each option used."""
    result = gpu_check("--dry-run", OUT=str(tmp_path))
    assert result.returncode == 0, result.stderr
    steps = dict(re.findall(r"^(\w+): (.+)$", result.stdout, re.M))
    assert {"device", "tests", "conformance", "generate"} <= set(steps)
    assert f"outputs: {tmp_path}/gpu_check" in result.stdout
    for name in ("conformance", "generate"):
        argv = shlex.split(steps[name])
        assert "--device" in argv and argv[argv.index("--device") + 1] == "cuda"
        script = REPO / argv[1]
        help_text = subprocess.run(
            [sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True
        ).stdout
        for option in (a for a in argv[2:] if a.startswith("--")):
            assert option in help_text, f"{script.name} has no {option}"
    tests = shlex.split(steps["tests"])
    assert all((REPO / t).is_file() for t in tests if t.startswith("tests/"))


def test_cpu_smoke_runs_every_step_and_prints_the_ratios(tmp_path):
    result = gpu_check("--cpu-smoke", OUT=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    dest = tmp_path / "gpu_check"
    checks = pd.read_csv(dest / "gpu_conformance_checks.csv")
    assert len(checks) >= 5 and checks["passed"].all()
    assert set(pd.read_csv(dest / "gpu_conformance.csv")["variant"]) == {"book", "exact", "fast"}
    assert (dest / "generate.csv").is_file() and (dest / "conformance.log").is_file()
    assert "train tokens/s   fast" in result.stdout and "decode tokens/s" in result.stdout
    assert "all steps passed" in result.stdout


def test_a_broken_tolerance_fails_the_device_checks(tmp_path):
    """Fast mode's logits differ from the book's by rounding: a zero tolerance must fail (exit 1)."""
    spec = importlib.util.spec_from_file_location("gpu_conformance", REPO / "bench" / "gpu_conformance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "c.csv"
    status = module.main(
        ["--device", "cpu", "--smoke", "--fast-atol", "0", "--steps", "1", "--out", str(out)]
    )
    assert status == 1
    checks = pd.read_csv(tmp_path / "c_checks.csv").set_index("check")
    assert not checks.loc["logits fast vs book", "passed"]
    assert checks.loc["logits exact vs book", "passed"]
