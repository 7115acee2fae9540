"""The benchmark scripts keep working: each runs in its smoke size and writes a sensible CSV.

Benchmarks are not tests (no timings are asserted); this only runs
``bench/run_all.py --smoke`` for one script at a time into a scratch folder
and checks what comes out.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"
LONG_COLUMNS = ["benchmark", "variant", "metric", "median", "min", "max", "ratio_vs_book"]
SCRIPTS = [
    pytest.param("train", id="train"),
    pytest.param("generate", id="generate"),
    pytest.param("pizza", id="pizza"),
    # Heavier smoke sizes; the whole DAG itself is exercised by tests/test_pipeline.py.
    pytest.param("dag", id="dag", marks=pytest.mark.slow),
    pytest.param("weights", id="weights", marks=pytest.mark.slow),
]


def run_all(*args, timeout=300):
    cmd = [sys.executable, str(BENCH / "run_all.py"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def check_long(df: pd.DataFrame) -> None:
    assert list(df.columns[: len(LONG_COLUMNS)]) == LONG_COLUMNS
    for col in ("median", "min", "max"):
        assert (df[col] > 0).all() and df[col].map(math.isfinite).all(), col
    assert (df["min"] <= df["median"]).all() and (df["median"] <= df["max"]).all()
    ratios = pd.to_numeric(df["ratio_vs_book"], errors="coerce").dropna()
    assert (ratios > 0).all()


def check_wide(df: pd.DataFrame) -> None:
    ratio_cols = [c for c in df.columns if c.endswith(("ratio_vs_book", "speedup_vs_book"))]
    assert ratio_cols, f"no ratio column among {list(df.columns)}"
    values = df[ratio_cols].to_numpy().ravel()
    assert len(values) and all(v > 0 and math.isfinite(v) for v in values)


@pytest.mark.parametrize("name", SCRIPTS)
def test_smoke_run_writes_a_sensible_csv(name, tmp_path):
    if not (BENCH / f"bench_{name}.py").is_file():
        pytest.skip(f"bench/bench_{name}.py does not exist yet")
    result = run_all("--smoke", "--only", name, "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    df = pd.read_csv(tmp_path / f"{name}_smoke.csv")
    assert len(df) > 0
    if set(LONG_COLUMNS) <= set(df.columns):
        check_long(df)
    else:
        check_wide(df)
    assert (tmp_path / "summary_smoke.png").stat().st_size > 0
    if name == "train":
        assert {"book", "exact", "fast"} <= set(df["variant"])
        book = df[(df["variant"] == "book") & (df["metric"] == "train_tokens_per_s")]
        assert book["ratio_vs_book"].tolist() == [1.0]
        peak = df[df["benchmark"] == "matmul_peak"]
        assert set(peak["variant"]) == {"fp32", "bf16"}
        fraction = df[df["metric"] == "train_fraction_of_peak"]["median"]
        assert ((fraction > 0) & (fraction < 1.5)).all()  # achieved FLOP/s measured against a real peak
        assert "train: fast train_tokens_per_s" in result.stdout  # the summary lists the ratio
        check_breakdown(pd.read_csv(tmp_path / "train_smoke_breakdown.csv"))


def check_breakdown(df: pd.DataFrame) -> None:
    """Where the time goes: every category per phase and variant, shares adding up to the whole."""
    assert {"book", "exact", "fast"} <= set(df["variant"]) and set(df["phase"]) == {"train", "eval"}
    assert {"matmul", "attention", "out_head", "cross_entropy", "norm_gelu", "optimizer", "data"} <= set(
        df["category"]
    )
    assert ((df["share"] >= 0) & (df["share"] <= 1)).all()
    totals = df.groupby(["phase", "variant"])["share"].sum()
    assert ((totals - 1).abs() < 1e-9).all(), totals
    train = df[df["phase"] == "train"].set_index(["variant", "category"])["share"]
    # Training steps run matmuls and an optimizer step; evaluation runs no optimizer.
    assert (train.xs("matmul", level="category") > 0).all()
    assert (train.xs("optimizer", level="category") > 0).all()
    assert (df[(df["phase"] == "eval") & (df["category"] == "optimizer")]["share"] == 0).all()


def test_summary_figure_from_existing_csvs(tmp_path):
    pd.DataFrame(
        [
            dict(
                benchmark="x", variant="book", metric="tokens_per_s", median=1, min=1, max=1, ratio_vs_book=1
            ),
            dict(
                benchmark="x", variant="fast", metric="tokens_per_s", median=3, min=2, max=4, ratio_vs_book=3
            ),
        ]
    ).to_csv(tmp_path / "train.csv", index=False)
    # A wide CSV, as some scripts write, and a script whose CSV is missing (tolerated).
    pd.DataFrame({"method": ["book", "cached"], "speedup_vs_book": [1.0, 4.0]}).to_csv(
        tmp_path / "generate.csv", index=False
    )
    result = run_all("--figure-only", "--out-dir", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train: fast tokens_per_s" in result.stdout and "generate: cached" in result.stdout
    assert "book" not in result.stdout.split("wrote")[0]  # the reference rows are not plotted
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_benchmark_is_a_clear_error(tmp_path):
    result = run_all("--only", "nosuch", "--out-dir", str(tmp_path), timeout=120)
    assert result.returncode != 0
    assert "--only nosuch: no such benchmark; choose from" in result.stderr


def test_thread_determinism_smoke_finds_repeats_identical(tmp_path):
    """The thread-count measurement runs, names the machine, and repeats at one thread count agree."""
    out = tmp_path / "threads.csv"
    cmd = [sys.executable, str(BENCH / "thread_determinism.py"), "--smoke", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = pd.read_csv(out)
    assert set(table["computation"]) == {"initial_losses", "train_steps", "greedy", "sampled"}
    assert table["repeat_identical"].all() and 1 in set(table["threads"])
    assert "machine:" in done.stdout and out.with_suffix(".machine.json").is_file()


def _bench_dag():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_dag", BENCH / "bench_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE_JOB = """\
import json, sys, time
class Job:
    rule = "fake_rule"
    log = [sys.argv[1]]
    input = ["results/a.txt"]
    output = ["results/b.txt"]
snakemake = Job()
time.sleep(0.2)  # stands for the imports
sys.stdout = open(snakemake.log[0], "w")
time.sleep(0.3)  # stands for the work
"""


def test_startup_probe_times_a_job_up_to_its_log(tmp_path):
    """bench_dag's probe records, for a Snakemake script job, its start, when it opens its log, its end."""
    scripts = tmp_path / "wf" / ".snakemake" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "tmpab12cd.fake.py").write_text(FAKE_JOB)
    (tmp_path / "other.py").write_text(FAKE_JOB)  # not a job: not recorded
    records = tmp_path / "records"
    records.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BENCH / "startup_probe"), os.environ.get("PYTHONPATH", "")]),
        "GPTLAB_BENCH_STARTUP": str(records),
    }
    for script in (scripts / "tmpab12cd.fake.py", tmp_path / "other.py"):
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "job.log")], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    (record,) = [json.loads(p.read_text()) for p in records.glob("*.json")]
    assert record["kind"] == "script" and record["script"] == "fake" and record["rule"] == "fake_rule"
    assert record["start"] < record["ready"] < record["end"]
    assert record["input"] == ["results/a.txt"] and record["output"] == ["results/b.txt"]
    jobs = _bench_dag().job_times(records)
    assert [j["rule"] for j in jobs] == ["fake_rule"]
    assert 0.2 <= jobs[0]["startup_s"] < jobs[0]["job_s"]  # the sleep before the log counts as start-up
    assert jobs[0]["job_s"] - jobs[0]["startup_s"] >= 0.3  # the sleep after it does not


def test_startup_shares_per_rule_add_kernels_to_their_reports(tmp_path):
    records = [
        dict(kind="script", script="a", rule="plot", pid=1, ppid=0, start=0.0, ready=1.0, end=4.0),
        dict(kind="script", script="a", rule="plot", pid=2, ppid=0, start=0.0, ready=1.0, end=4.0),
        dict(kind="script", script="r", rule="render_report", pid=3, ppid=0, start=0.0, ready=1.0, end=10.0),
        dict(kind="kernel", script="", rule=None, pid=4, ppid=3, start=2.0, ready=4.0, end=None),
    ]
    for rec in records:
        (tmp_path / f"{rec['pid']}.json").write_text(json.dumps(rec))
    bench_dag = _bench_dag()
    rules = bench_dag.by_rule(bench_dag.job_times(tmp_path))
    assert rules["plot"] == pytest.approx(
        dict(jobs=2, job_s=8.0, startup_s=2.0, share_of_jobs=8 / 18, startup_share=0.25)
    )
    assert rules["render_report"]["startup_s"] == pytest.approx(3.0)  # its own 1 s and its kernel's 2 s
    jobs = bench_dag.job_times(tmp_path)
    run = {"wall_s": 12.0, "count": 3, "first_job_s": 0.5, "jobs": jobs, "critical_path": jobs[:1]}
    rows = bench_dag.rows_of([run], "all")
    share = [r for r in rows if r["variant"] == "workflow" and r["metric"] == "startup_share"]
    assert share[0]["median"] == pytest.approx(5 / 18)


def test_a_revisions_workflow_is_exported_from_git(tmp_path):
    bench_dag = _bench_dag()
    dest = bench_dag.export_revision("HEAD", tmp_path / "head")
    committed = subprocess.run(["git", "show", "HEAD:Snakefile"], cwd=REPO, capture_output=True, text=True)
    assert (dest / "Snakefile").read_text() == committed.stdout
    assert (dest / "src" / "gptlab" / "model.py").is_file() and not (dest / "results").exists()
    with pytest.raises(SystemExit, match="--revision no-such-rev: not a revision"):
        bench_dag.export_revision("no-such-rev", tmp_path / "bad")


def test_real_shape_mirror_is_written_once_and_rewritten_when_its_shape_changes(tmp_path):
    pytest.importorskip("tensorflow")
    bench_dag = _bench_dag()
    small = dict(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    shapes = {size: small for size in bench_dag.TINY_GPT2_SHAPES}
    mirror = bench_dag.real_mirror(tmp_path / "mirror", shapes)
    index = mirror / "124M" / "model.ckpt.index"
    assert json.loads((mirror / "124M" / "hparams.json").read_text()) == small
    written = index.stat().st_mtime_ns
    bench_dag.real_mirror(tmp_path / "mirror", shapes)  # reused
    assert index.stat().st_mtime_ns == written
    (mirror / "1558M" / "complete.json").unlink()  # as if its writing had been interrupted
    wider = {**shapes, "124M": {**small, "n_embd": 16}}
    bench_dag.real_mirror(tmp_path / "mirror", wider)
    assert json.loads((mirror / "124M" / "hparams.json").read_text())["n_embd"] == 16
    assert (mirror / "1558M" / "complete.json").is_file()


def test_critical_path_is_the_longest_chain_of_dependent_jobs():
    """Jobs linked by their files: the chain with the most seconds, not the longest job or the most jobs."""

    def job(rule, start, seconds, inputs, outputs):
        return dict(rule=rule, start=start, job_s=seconds, input=inputs, output=outputs)

    jobs = [
        job("download", 0, 5, [], ["results/data/corpus.txt"]),
        job("fetch_weights", 0, 30, [], ["results/gpt2/124M"]),  # a folder output
        job("evaluate", 30, 10, ["results/gpt2/124M/model.st", "results/data/corpus.txt"], ["e.csv"]),
        job("pretrain", 5, 50, ["results/data/corpus.txt"], ["results/pretrain/checkpoint.pt"]),
        job("tokenize", 5, 1, ["results/data/corpus.txt"], ["t.bin"]),
        job("count", 6, 1, ["t.bin"], ["c.txt"]),
        job("report", 60, 2, ["e.csv", "results/pretrain/checkpoint.pt", "c.txt"], ["r.html"]),
    ]
    chain = _bench_dag().critical_path(jobs)
    assert [j["rule"] for j in chain] == ["download", "pretrain", "report"]  # 57 s, not 30 + 10 + 2
    jobs[3]["job_s"] = 20  # now the weights' chain is longer, through a file inside a folder output
    chain = _bench_dag().critical_path(jobs)
    assert [j["rule"] for j in chain] == ["fetch_weights", "evaluate", "report"]
    assert _bench_dag().critical_path([]) == []


# Job start-up: jobs that need no torch do not import it (torch's import is most of a job's start-up).
TORCH_FREE_SCRIPTS = [
    "download_corpus",
    "download_gpt2",
    "combine_tables",
    "plot_losses",
    "plot_model_losses",
    "plot_sizes",
    "plot_sweep",
    "plot_determinism",
    "render_report",
]
TORCH_FREE_NOTEBOOKS = ["ex5_2_sweep", "ex5_3_determinism", "ex5_4_resume"]


def _import_lines(source: str) -> str:
    import ast

    return "\n".join(
        ast.get_source_segment(source, node)
        for node in ast.parse(source).body
        if isinstance(node, (ast.Import, ast.ImportFrom))
    )


def _imports_torch(code: str) -> bool:
    probe = code + "\nimport sys\nprint('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1] == "True"


@pytest.mark.parametrize("script", TORCH_FREE_SCRIPTS)
def test_jobs_that_need_no_torch_start_without_it(script):
    source = (REPO / "workflow" / "scripts" / f"{script}.py").read_text()
    assert not _imports_torch(_import_lines(source))


@pytest.mark.parametrize("notebook", TORCH_FREE_NOTEBOOKS)
def test_reports_that_need_no_torch_import_without_it(notebook):
    cells = json.loads((REPO / "workflow" / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    code = "\n".join(_import_lines("".join(c["source"])) for c in cells if c["cell_type"] == "code")
    assert "gptlab" in code and not _imports_torch(code)


def test_the_packages_export_their_names_when_used():
    code = """
import gptlab, gptlab.gpt2, gptlab.experiments, gptlab.experiments.figures
import sys
assert "torch" not in sys.modules
for package in (gptlab, gptlab.gpt2, gptlab.experiments, gptlab.experiments.figures):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
from gptlab import GPTModel
from gptlab.model import GPTModel as same
assert GPTModel is same
"""
    assert _imports_torch(code)  # using the names imports what they need
