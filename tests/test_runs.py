"""Training studies (config `runs`): variants x seeds as parallel jobs, on the tiny offline config."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from gptlab.training.checkpoint import load_checkpoint
from tests.workflow_helpers import (
    TINY_RUN_NAMES,
    TINY_RUNS,
    copy_workflow,
    prepare_tiny_study,
    snakemake,
    write_config,
)

RUNS = TINY_RUN_NAMES
RUN_FILES = ("history.csv", "samples.csv", "checkpoint.pt")
# Columns of summary.csv that time or measure this machine's job, not the run's result.
MEASURED = ["wall_seconds", "tokens_per_second", "peak_rss_mb"]


@pytest.fixture(scope="module")
def parallel_study(runs_study):
    workdir, _config, result = runs_study
    return workdir, result.stdout + result.stderr


@pytest.fixture(scope="module")
def sequential_study(tmp_path_factory):
    """The same 6 runs made one by one (one core: one job at a time)."""
    workdir = tmp_path_factory.mktemp("runs-sequential")
    config = prepare_tiny_study(workdir, runs=TINY_RUNS)
    targets = [f"results/runs/{run}/checkpoint.pt" for run in RUNS] + ["results/runs/summary.csv"]
    result = snakemake(workdir, "--configfile", str(config), "--cores", "1", *targets, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return workdir, result.stdout + result.stderr


def started_before_first_finished(output: str, rule: str) -> int:
    """How many jobs of ``rule`` Snakemake had started when the first of them finished."""
    current, jobids, started = None, set(), 0
    for line in output.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            current = m.group(1)
            started += current == rule
        elif (m := re.match(r"^\s+jobid: (\d+)", line)) and current == rule:
            jobids.add(m.group(1))
        elif (m := re.match(r"^Finished jobid: (\d+)", line)) and m.group(1) in jobids:
            return started
    return started


def test_every_run_is_a_job_and_they_run_at_once(parallel_study):
    workdir, output = parallel_study
    assert output.count("rule train_run:") == 6
    assert started_before_first_finished(output, "train_run") == 6
    for run in RUNS:
        folder = workdir / "results" / "runs" / run
        assert all((folder / name).is_file() for name in (*RUN_FILES, "metrics.json")), run
        assert (workdir / "results" / "logs" / "runs" / f"{run}.log").is_file()


def test_each_run_has_its_seed_and_settings(parallel_study):
    workdir, _ = parallel_study
    for run in RUNS:
        variant, seed = run.rsplit("-seed", 1)
        ckpt = load_checkpoint(workdir / "results" / "runs" / run / "checkpoint.pt")
        assert ckpt["train_config"]["seed"] == int(seed)
        assert ckpt["model_config"]["drop_rate"] == (0.0 if variant == "no-dropout" else 0.1)
        metrics = json.loads((workdir / "results" / "runs" / run / "metrics.json").read_text())
        assert (metrics["run"], metrics["variant"], metrics["seed"]) == (run, variant, int(seed))
        assert metrics["tokens_seen"] > 0 and metrics["tokens_per_second"] > 0 and metrics["peak_rss_mb"] > 0
        assert metrics["settings"]["model"]["drop_rate"] == ckpt["model_config"]["drop_rate"]
    # Seeds and settings change the result: no two runs have the same loss curve.
    curves = {
        run: pd.read_csv(workdir / "results" / "runs" / run / "history.csv").val_loss.tolist() for run in RUNS
    }
    assert len({tuple(c) for c in curves.values()}) == len(RUNS)


def test_parallel_runs_equal_runs_made_one_by_one(parallel_study, sequential_study):
    """Runs share nothing but read-only inputs: the same settings give the same files, byte for byte."""
    (parallel, _), (sequential, output) = parallel_study, sequential_study
    assert started_before_first_finished(output, "train_run") == 1
    for run in RUNS:
        for name in RUN_FILES:
            a = (parallel / "results" / "runs" / run / name).read_bytes()
            assert a == (sequential / "results" / "runs" / run / name).read_bytes(), f"{run}/{name}"
    a, b = (
        pd.read_csv(w / "results" / "runs" / "summary.csv").drop(columns=MEASURED)
        for w in (parallel, sequential)
    )
    pd.testing.assert_frame_equal(a, b)


def test_summary_figure_and_report(parallel_study):
    workdir, _ = parallel_study
    summary = pd.read_csv(workdir / "results" / "runs" / "summary.csv")
    assert summary["run"].tolist() == RUNS
    for row in summary.itertuples():
        history = pd.read_csv(workdir / "results" / "runs" / row.run / "history.csv")
        assert row.final_val_loss == history.val_loss.iloc[-1]
        assert row.best_val_loss == history.val_loss.min()
    assert (workdir / "results" / "figures" / "training_study.png").stat().st_size > 10_000
    html = (workdir / "results" / "reports" / "training_study.html").read_text()
    assert "seeds" in html and "no-dropout" in html


def test_the_default_study_trains_no_runs(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    plan = snakemake(workdir, "-n", "--quiet", "rules", timeout=300)
    assert plan.returncode == 0 and "pretrain" in plan.stdout and "train_run" not in plan.stdout
    asked = snakemake(workdir, "-n", "training_study", timeout=300)
    assert asked.returncode != 0 and "config error at runs: not set" in asked.stdout + asked.stderr


def variant(**settings):
    return {"variants": [{"name": "a", **settings}]}


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ({"seeds": [123, "x"]}, "runs.seeds[1]: 'x' is not of type 'integer'"),
        (variant(modle={}), "runs.variants[0]: Additional properties are not allowed ('modle'"),
        (variant(model={"dropout": 0}), "runs.variants[0].model.dropout: not a model setting"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "runs.variants[1].name: 'a' is already"),
        ({"variants": [{"name": "book"}]}, "runs.variants[0].name: 'book' is already"),
        (variant(model={"drop_rate": 2}), "runs.variants[0].model.drop_rate: 2 is greater"),
        (variant(data={"max_length": 500}), "runs.variants[0].data.max_length: 500 exceeds"),
        (variant(training={"seed": 1}), "runs.variants[0].training.seed: a run's seed comes from runs.seeds"),
        (
            variant(corpus={"path": "/nonexistent/books"}),
            "runs.variants[0].corpus.path: /nonexistent/books is",
        ),
    ],
)
def test_a_bad_runs_entry_fails_before_any_job_naming_the_key(tmp_path, runs, message):
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir / "bad.yaml", "config/config.yaml", runs=runs)
    result = snakemake(workdir, "-n", "--configfile", str(config), timeout=300)
    assert result.returncode != 0
    assert f"config error at {message}" in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_a_corpus_variant_is_tokenized_once_and_streamed(tmp_path):
    """A folder of .txt files: tokenized by one job, which a later run of the study reuses."""
    from tests.conftest import make_text

    workdir = tmp_path / "wf"
    books = workdir / "books"
    for i, sub in enumerate(["a", "a", "b"]):
        (books / sub).mkdir(parents=True, exist_ok=True)
        (books / sub / f"book{i}.txt").write_text(make_text(1500, seed=i))
    variant = {"name": "books", "corpus": {"path": "books"}}
    config = prepare_tiny_study(workdir, runs={"seeds": [123], "variants": [variant], "threads": 1})
    targets = ["results/runs/books-seed123/checkpoint.pt"]
    first = snakemake(workdir, "--configfile", str(config), "--cores", "2", *targets, timeout=900)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    assert (first.stdout + first.stderr).count("rule tokenize_corpus:") == 1
    (meta,) = (workdir / "results" / "corpora").glob("*/meta.json")
    tokens = json.loads(meta.read_text())
    assert [d["name"] for d in tokens["documents"]] == ["a/book0.txt", "a/book1.txt", "b/book2.txt"]
    ckpt = load_checkpoint(workdir / "results/runs/books-seed123/checkpoint.pt")
    assert ckpt["train_config"]["corpus_tokens_sha256"] == tokens["tokens_sha256"]
    assert "corpus_sha256" not in ckpt["train_config"]

    # One more seed: a new run, the same tokenized corpus.
    settings = yaml.safe_load(config.read_text())
    settings["runs"]["seeds"] = [123, 124]
    config.write_text(yaml.safe_dump(settings))
    second = snakemake(
        workdir, "--configfile", str(config), "--cores", "2", "results/runs/books-seed124/checkpoint.pt"
    )
    assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
    assert "rule tokenize_corpus:" not in second.stdout + second.stderr
    assert "rule train_run:" in second.stdout + second.stderr


def test_a_failing_run_loses_none_of_the_others(tmp_path):
    """A run that fails at run time is retried (runs.retries), then given up; the other runs finish."""
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "short.txt").write_text("Far too short a text to train on.\n")
    variant = {"name": "short", "corpus": {"path": "short.txt"}}
    config = prepare_tiny_study(workdir, runs={"seeds": [123], "variants": [variant], "threads": 1})
    # One job at a time, the failing run first: the other run starts only after the failure.
    first = ["--prioritize", "results/runs/short-seed123/checkpoint.pt", "--cores", "1"]
    result = snakemake(workdir, "--configfile", str(config), *first, "--", "training_study", timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("Error in rule train_run:") == 2  # the first attempt and its retry
    assert output.index("Error in rule train_run:") < output.index("wildcards: run=book-seed123")
    assert "yields no window" in (workdir / "results/logs/runs/short-seed123.log").read_text()
    assert (workdir / "results/runs/book-seed123/checkpoint.pt").is_file()
    assert not (workdir / "results/runs/short-seed123/checkpoint.pt").exists()
    assert not (workdir / "results/runs/summary.csv").exists()
