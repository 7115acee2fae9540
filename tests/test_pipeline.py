"""The whole DAG on the tiny offline configuration, in a scratch copy of the repository."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time

import nbformat
import pandas as pd
import pytest
import yaml

from tests.workflow_helpers import TINY_GPT2_SHAPES, copy_workflow, snakemake, write_config

MODELS = ["trained", *(f"gpt2-{size}" for size in TINY_GPT2_SHAPES)]
REPORTS = {
    "ex5_1_pizza": "Exercise 5.1",
    "ex5_2_sweep": "Exercise 5.2",
    "ex5_3_determinism": "Exercise 5.3",
    "ex5_4_resume": "Resumed vs uninterrupted",
    "ex5_5_losses": "Exercise 5.5",
    "ex5_6_sizes": "Exercise 5.6",
}


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
        "resume/uninterrupted/history.csv",
        "resume/verification.json",
        "figures/losses.png",
        "figures/losses.pdf",
        "reports/ex5_4_resume.ipynb",
        "reports/ex5_4_resume.html",
        "logs/pretrain.log",
        "benchmarks/pretrain.tsv",
        *(f"gpt2/{size}/model.safetensors" for size in TINY_GPT2_SHAPES),
        *(f"gpt2/{size}/tf/manifest.json" for size in TINY_GPT2_SHAPES),
        "ex5_1/pizza_book.csv",
        "ex5_1/pizza_sweep.csv",
        "ex5_1/next_token.csv",
        "ex5_2/generations.csv",
        "ex5_2/cells.csv",
        "ex5_2/recommended.csv",
        "ex5_3/determinism.csv",
        "ex5_5/losses.csv",
        "ex5_6/generations.csv",
        "ex5_6/summary.csv",
        "ex5_6/side_by_side.csv",
        "ex5_6/book_reference.csv",
        "figures/ex5_1/toy_distributions.png",
        "figures/ex5_1/pizza_sweep.png",
        "figures/ex5_1/next_token.png",
        "figures/ex5_2/heatmap_mean_logprob.png",
        "figures/ex5_2/heatmap_verbatim_span.png",
        "figures/ex5_3/determinism.png",
        "figures/ex5_5/losses.png",
        "figures/ex5_6/sizes.png",
        *(f"reports/{name}.html" for name in REPORTS),
        *(f"logs/sweep_{model}.log" for model in MODELS),
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
    # the reference is the pretraining job's continuation, past the resume point in memory: a proof
    assert verification["proves_exact_resume"] is True and verification["resume_point_epoch"] == 2
    reference = json.loads((workdir / "results/resume/uninterrupted/history.meta.json").read_text())
    assert reference["reference"]["in_memory_since"] == {"epoch": 0, "batch_in_epoch": 0}
    samples = pd.read_csv(workdir / "results/pretrain/samples.csv")
    assert samples["text"].str.startswith("Every effort moves you").all() and len(samples) == 2
    meta = json.loads((workdir / "results/pretrain/history.meta.json").read_text())
    assert meta["train_config"]["seed"] == 123 and meta["versions"]["torch"].startswith("2.13.0")


def test_reports_render_without_errors(study):
    workdir, *_ = study
    for name, heading in REPORTS.items():
        nb = nbformat.read(workdir / f"results/reports/{name}.ipynb", as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        html = (workdir / f"results/reports/{name}.html").read_text()
        assert heading in html, name
        assert "data:image/png;base64" in html, name  # figures embedded: the page displays offline
    html = (workdir / "results/reports/ex5_4_resume.html").read_text()
    assert "identical</strong>, bit for bit" in html


def test_gpt2_releases_downloaded_and_converted(study):
    from gptlab.gpt2 import read_gpt2_hparams

    workdir, *_ = study
    for size, shape in TINY_GPT2_SHAPES.items():
        manifest = json.loads((workdir / f"results/gpt2/{size}/tf/manifest.json").read_text())
        assert manifest["model_size"] == size and len(manifest["files"]) == 7
        assert all(entry["url"].startswith("file://") for entry in manifest["files"].values())
        hparams = read_gpt2_hparams(workdir / f"results/gpt2/{size}/model.safetensors")
        assert (hparams["n_embd"], hparams["n_layer"]) == (shape["n_embd"], shape["n_layer"])


def test_losses_are_the_book_procedure_on_each_model(study):
    from gptlab.data import read_text
    from gptlab.experiments.losses import evaluate_losses

    workdir, config, _ = study
    losses = pd.read_csv(workdir / "results/ex5_5/losses.csv")
    assert losses["model"].tolist() == [m for m in MODELS for _ in (0, 1)]
    assert (losses["perplexity"] - losses["loss"].map(math.exp)).abs().max() < 1e-9
    data = yaml.safe_load(config.read_text())["data"]
    again = evaluate_losses(
        {"gpt2-124M": workdir / "results/gpt2/124M/model.safetensors"},
        read_text(workdir / "results/data/corpus.txt"),
        train_ratio=data["train_ratio"],
        max_length=data["max_length"],
        stride=data["stride"],
        batch_size=data["batch_size"],
    )
    mine = losses[losses["model"] == "gpt2-124M"]["loss"].to_numpy()
    assert abs(mine - again["loss"].to_numpy()).max() < 1e-6
    # each per-model table describes its model, origin included: the synthetic release is not OpenAI's
    meta = json.loads((workdir / "results/ex5_5/models/gpt2-124M.meta.json").read_text())
    assert meta["models"]["gpt2-124M"]["origin"]["matches_openai"] is False


def test_experiment_tables_hold_every_cell(study):
    workdir, config, _ = study
    sampling = yaml.safe_load(config.read_text())["sampling"]
    book = pd.read_csv(workdir / "results/ex5_1/pizza_book.csv")
    pizza = book[book["token"] == "pizza"].set_index("temperature")["count_book_loop"]
    assert pizza.to_dict() == {1.0: 0, 0.1: 0, 5.0: 32}  # the book's counts
    next_token = pd.read_csv(workdir / "results/ex5_1/next_token.csv")
    assert set(next_token["model"]) == set(MODELS) and next_token["prob"].between(0, 1).all()

    sweep = sampling["sweep"]
    gens = pd.read_csv(workdir / "results/ex5_2/generations.csv")
    per_model = (
        len(sampling["prompts"]) * len(sweep["temperatures"]) * len(sweep["top_ks"]) * len(sampling["seeds"])
    )
    assert gens.groupby("model").size().to_dict() == {m: per_model for m in MODELS}
    greedy = gens[gens["temperature"] == 0].groupby(["model", "prompt_id", "top_k_label"])["text"].nunique()
    assert (greedy == 1).all()  # greedy decoding ignores the seed
    cells = pd.read_csv(workdir / "results/ex5_2/cells.csv")
    assert len(cells) == len(MODELS) * len(sweep["temperatures"]) * len(sweep["top_ks"])
    assert set(pd.read_csv(workdir / "results/ex5_2/recommended.csv")["model"]) == set(MODELS)

    determinism = pd.read_csv(workdir / "results/ex5_3/determinism.csv")
    assert determinism["as_expected"].all() and set(determinism["model"]) == {"trained"}

    summary = pd.read_csv(workdir / "results/ex5_6/summary.csv")
    losses = pd.read_csv(workdir / "results/ex5_5/losses.csv").set_index(["model", "split"])["loss"]
    for row in summary.itertuples():
        assert row.val_loss == pytest.approx(losses[(row.model, "val")], abs=1e-12)
    wide = pd.read_csv(workdir / "results/ex5_6/side_by_side.csv")
    assert {f"text[{m}]" for m in MODELS[1:]} <= set(wide.columns)
    reference = pd.read_csv(workdir / "results/ex5_6/book_reference.csv")
    assert set(reference["size"]) == set(TINY_GPT2_SHAPES)
    assert not reference["matches_book"].any()  # random weights do not write the book's sentence


def test_snakemake_report_builds_from_the_artifacts(study):
    workdir, config, _ = study
    result = snakemake(workdir, "--report", "results/report.html", "--configfile", str(config), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "results/report.html").stat().st_size > 100_000


def test_changing_a_sampling_setting_reruns_only_what_depends_on_it(study):
    workdir, config, _ = study
    changed = yaml.safe_load(config.read_text())
    changed["sampling"]["sweep"]["max_new_tokens"] += 1
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    dry = snakemake(workdir, "-n", "--configfile", str(path), timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_counts(dry.stdout + dry.stderr)
    assert set(jobs) == {"sweep", "combine_sweep", "plot_sweep", "render_report", "all"}, jobs
    assert jobs["sweep"] == len(MODELS) and jobs["render_report"] == 1


def test_a_changed_local_corpus_reruns_everything_that_depends_on_it(study, tmp_path):
    """``corpus.local_path`` is an input: editing the file reruns the download and all that reads it."""
    from gptlab.download import VERDICT_SHA256

    workdir, config, _ = study
    again = tmp_path / "again"
    shutil.copytree(workdir, again, symlinks=True, ignore=shutil.ignore_patterns("locks", "incomplete"))
    copied_config = again / config.relative_to(workdir)
    settings = yaml.safe_load(copied_config.read_text())
    corpus = again / settings["corpus"]["local_path"]  # relative to the study's folder
    corpus.write_text(corpus.read_text() + "\nOne more line.\n")
    dry = snakemake(again, "-n", "--configfile", str(copied_config), timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_counts(dry.stdout + dry.stderr)
    assert jobs["download_corpus"] == 1 and jobs["pretrain"] == 1 and jobs["resume"] == 1, jobs
    assert jobs["evaluate_losses"] == len(MODELS) and jobs["sweep"] == len(MODELS), jobs
    assert "download_gpt2" not in jobs and "convert_gpt2" not in jobs  # they do not read the text

    # with the Verdict's sha256 configured, the edited text is refused before any job, naming the key
    settings["corpus"]["sha256"] = VERDICT_SHA256
    checked = again / "checked.yaml"
    checked.write_text(yaml.safe_dump(settings))
    dry = snakemake(again, "-n", "--configfile", str(checked), timeout=300)
    assert dry.returncode != 0 and "config error at corpus.sha256" in dry.stdout + dry.stderr
    sha = hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert f"set corpus.sha256 to {sha}" in dry.stdout + dry.stderr


def test_jobs_run_again_with_one_thread_give_byte_identical_tables(study, tmp_path):
    """Determinism of the published numbers: rerun the model jobs on a copy, with 1 thread instead of 2."""
    workdir, config, _ = study
    again = tmp_path / "again"
    shutil.copytree(workdir, again, symlinks=True, ignore=shutil.ignore_patterns("locks", "incomplete"))
    targets = [
        "results/ex5_5/models/trained.csv",
        "results/ex5_5/models/gpt2-124M.csv",
        "results/ex5_1/models/trained.csv",
        "results/ex5_2/models/trained/generations.csv",
        "results/ex5_2/models/trained/cells.csv",
        "results/ex5_3/determinism.csv",
    ]
    rules = ["evaluate_losses", "pizza_next_token", "sweep", "determinism"]
    config_copy = again / config.relative_to(workdir)
    run = snakemake(
        again,
        "--cores",
        "1",
        "--configfile",
        str(config_copy),
        "--forcerun",
        *rules,
        "--",
        *targets,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert set(job_counts(run.stdout + run.stderr)) == {*rules}, run.stdout[-2000:]
    for target in targets:
        assert (again / target).read_bytes() == (workdir / target).read_bytes(), target
        meta = json.loads((again / target).with_suffix(".meta.json").read_text())
        assert meta["machine"]["torch_threads"] == 1, target
    first = json.loads((workdir / targets[0]).with_suffix(".meta.json").read_text())["machine"]
    assert first["torch_threads"] == 2 and first["cpu"] and first["torch_cpu_capability"]


def test_offline_run_fails_at_the_downloads_and_finishes_the_rest(tmp_path):
    """No network: the downloads fail naming the URLs and the config keys; independent jobs still run."""
    workdir = copy_workflow(tmp_path / "wf")
    dead = "http://127.0.0.1:9"  # the discard port: connection refused at once
    config = write_config(
        workdir / "offline.yaml",
        corpus={"local_path": None, "url": f"{dead}/the-verdict.txt"},
        gpt2={"sizes": ["124M"], "base_urls": [f"{dead}/gpt-2/models"]},
    )
    result = snakemake(workdir, "--cores", "2", "--configfile", str(config), timeout=900)
    assert result.returncode != 0
    logs = workdir / "results/logs"
    corpus_log = (logs / "download_corpus.log").read_text()
    assert f"{dead}/the-verdict.txt" in corpus_log and "corpus.local_path" in corpus_log
    gpt2_log = (logs / "download_gpt2_124M.log").read_text()
    assert f"{dead}/gpt-2/models/124M/" in gpt2_log and "gpt2.base_urls" in gpt2_log
    assert (workdir / "results/ex5_1/pizza_book.csv").is_file()  # needs no download: it finished
    assert not (workdir / "results/pretrain").exists()


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
