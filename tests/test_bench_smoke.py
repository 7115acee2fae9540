"""The benchmark scripts keep working: each runs in its smoke size and writes a sensible CSV.

Benchmarks are not tests (no timings are asserted); this only runs
``bench/run_all.py --smoke`` for one script at a time into a scratch folder
and checks what comes out.
"""

from __future__ import annotations

import math
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
