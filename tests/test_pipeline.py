"""The whole DAG on the tiny offline configuration, in a scratch copy of the repository."""

from __future__ import annotations

import json
import re
import time

import nbformat
import pandas as pd
import pytest

from tests.workflow_helpers import snakemake


def job_counts(output: str) -> dict[str, int]:
    """Rule → job count from Snakemake's 'Job stats' table."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def study(tiny_study):
    return tiny_study


def test_every_artifact_exists(study):
    workdir, *_ = study
    results = workdir / "results"
    for path in [
        "data/corpus.txt",
        "pretrain/checkpoint.pt",
        "pretrain/history.csv",
        "pretrain/samples.csv",
        "resume/checkpoint.pt",
        "resume/history.csv",
        "resume/uninterrupted/checkpoint.pt",
        "resume/verification.json",
        "figures/losses.png",
        "figures/losses.pdf",
        "reports/ex5_4_resume.ipynb",
        "reports/ex5_4_resume.html",
        "logs/pretrain.log",
        "benchmarks/pretrain.tsv",
    ]:
        assert (results / path).is_file() and (results / path).stat().st_size > 0, path


def test_training_artifacts_hold_the_run(study):
    workdir, *_ = study
    history = pd.read_csv(workdir / "results/pretrain/history.csv")
    assert list(history.columns) == ["run", "epoch", "global_step", "tokens_seen", "train_loss", "val_loss"]
    assert history["epoch"].max() == 2 and history["global_step"].is_monotonic_increasing
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0] < 11.5
    resumed = pd.read_csv(workdir / "results/resume/history.csv")
    assert set(resumed["run"]) == {"pretrain", "resume"}
    assert resumed[resumed["run"] == "resume"]["epoch"].unique().tolist() == [3]
    verification = json.loads((workdir / "results/resume/verification.json").read_text())
    assert verification["identical"] is True and verification["epochs"] == 3
    samples = pd.read_csv(workdir / "results/pretrain/samples.csv")
    assert samples["text"].str.startswith("Every effort moves you").all() and len(samples) == 2
    meta = json.loads((workdir / "results/pretrain/history.meta.json").read_text())
    assert meta["train_config"]["seed"] == 123 and meta["versions"]["torch"].startswith("2.13.0")


def test_reports_render_without_errors(study):
    workdir, *_ = study
    nb = nbformat.read(workdir / "results/reports/ex5_4_resume.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = (workdir / "results/reports/ex5_4_resume.html").read_text()
    assert "Resumed vs uninterrupted" in html and "identical</strong>, bit for bit" in html
    assert "data:image/png;base64" in html  # the figure is embedded: the page displays offline


def test_editing_a_notebook_reruns_only_its_report(study):
    workdir, config, _ = study
    notebook = workdir / "workflow/notebooks/ex5_4_resume.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("An added remark."))
    nbformat.write(nb, notebook)
    later = time.time()
    dry = snakemake(workdir, "-n", "--configfile", str(config), timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert set(job_counts(dry.stdout + dry.stderr)) == {"render_report", "all"}, dry.stdout[-3000:]
    before = (workdir / "results/pretrain/checkpoint.pt").stat().st_mtime
    run = snakemake(workdir, "--cores", "2", "--configfile", str(config), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (workdir / "results/pretrain/checkpoint.pt").stat().st_mtime == before
    assert (workdir / "results/reports/ex5_4_resume.html").stat().st_mtime >= later - 5
