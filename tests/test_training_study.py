"""The training study's analysis on synthetic runs with known numbers: summary, statistics, figure, report."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from gptlab.experiments.figures import plot_training_study, training_study_figure
from gptlab.experiments.stats import t_quantile
from gptlab.experiments.training_study import (
    book_curve,
    book_is_typical,
    book_settings_differences,
    seed_spread,
    summarize_runs,
    variant_changes,
    variant_effects,
)
from gptlab.io import sidecar_path
from gptlab.model import GPT_CONFIG_124M
from gptlab.study.reports import render_report
from gptlab.training.book import BOOK_LOSS_LINES
from tests.conftest import REPO, TINY_CONFIG

T95 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 9: 2.262157, 30: 2.042272}
BOOK = book_curve()
BOOK_DATA = {"train_ratio": 0.9, "batch_size": 2, "max_length": 256, "stride": 256}
BOOK_TRAINING = {
    "num_epochs": 10,
    "learning_rate": 0.0004,
    "weight_decay": 0.1,
    "eval_freq": 5,
    "eval_iter": 5,
    "start_context": "Every effort moves you",
    "fast": False,
}
MACHINE = {
    "cpu": "Test CPU",
    "cpu_count": 2,
    "torch": "2.0",
    "torch_cpu_capability": "AVX2",
    "torch_threads": 2,
}
# Final validation loss = the book's 6.452 + offset (the whole curve is shifted, so the best epoch stays 7).
OFFSETS = {
    ("book", 123): 0.0,
    ("book", 124): 0.05,
    ("book", 125): -0.05,
    ("no-dropout", 123): -0.21,
    ("no-dropout", 124): 0.05 - 0.20,
    ("no-dropout", 125): -0.05 - 0.19,
    ("lr-1e-3", 124): -0.052,
    ("lr-1e-3", 123): 0.098,
}


def settings(variant: str, seed: int, book: bool) -> dict:
    model = dict(GPT_CONFIG_124M) if book else dict(TINY_CONFIG)
    model["drop_rate"] = 0.0 if variant == "no-dropout" else 0.1
    data = dict(BOOK_DATA) if book else {**BOOK_DATA, "max_length": 32, "stride": 32}
    lr = 0.001 if variant == "lr-1e-3" else 0.0004
    training = {"seed": seed, **BOOK_TRAINING, "learning_rate": lr}
    return {"model": model, "data": data, "training": training, "corpus": "The Verdict" if book else "t.txt"}


def write_run(root: Path, variant: str, seed: int, book: bool = True) -> dict:
    name = f"{variant}-seed{seed}"
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    offset = OFFSETS[(variant, seed)]
    history = BOOK.assign(
        run=name,
        tokens_seen=(BOOK["global_step"] + 1) * 512,
        train_loss=BOOK["train_loss"] + offset / 2,
        val_loss=BOOK["val_loss"] + offset,
    )[["run", "epoch", "global_step", "tokens_seen", "train_loss", "val_loss"]]
    history.to_csv(folder / "history.csv", index=False)
    sidecar_path(folder / "history.csv").write_text(json.dumps({"run": name}))
    texts = [f"Every effort moves you {variant} {seed} after epoch {e}" for e in range(1, 11)]
    samples = pd.DataFrame({"run": name, "epoch": range(1, 11), "text": texts})
    samples.to_csv(folder / "samples.csv", index=False)
    metrics = {
        "run": name,
        "variant": variant,
        "seed": seed,
        "epochs": 10,
        "wall_seconds": 100.0 + seed,
        "tokens_seen": 46080,
        "tokens_per_second": 46080 / (100.0 + seed),
        "peak_rss_mb": 900.0,
        "machine": MACHINE,
        "settings": settings(variant, seed, book),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    paths = {"history": folder / "history.csv", "samples": folder / "samples.csv"}
    return {"run": name, "variant": variant, "seed": seed, **paths, "metrics": folder / "metrics.json"}


def make_study(root: Path, book: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    runs = [write_run(root, v, s, book) for (v, s) in OFFSETS]
    summary, samples = summarize_runs(
        runs[::-1], root / "summary.csv", root / "final_samples.csv", variants=["no-dropout", "lr-1e-3"]
    )
    return summary, samples, runs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return (root, *make_study(root))


# --------------------------------------------------------------------------- the tables


def test_summary_has_a_row_per_run_in_order(study):
    root, summary, samples, _ = study
    order = ["book", "no-dropout", "lr-1e-3"]  # the baseline, then the configuration's order; then seeds
    assert list(summary["run"]) == [
        f"{v}-seed{s}" for v in order for s in (123, 124, 125) if (v, s) in OFFSETS
    ]
    written = pd.read_csv(root / "summary.csv")
    assert list(written.columns[:14]) == [
        "run", "variant", "seed", "final_train_loss", "final_val_loss", "best_val_loss", "best_epoch",
        "best_step", "train_val_gap", "epochs", "tokens_seen", "wall_seconds", "tokens_per_second",
        "peak_rss_mb",
    ]  # fmt: skip
    assert {"model.drop_rate", "training.learning_rate", "data.batch_size", "corpus"} <= set(written.columns)
    row = written.set_index("run").loc["book-seed124"]
    assert row["final_val_loss"] == pytest.approx(6.502)
    assert row["final_train_loss"] == pytest.approx(0.391 + 0.025)
    assert row["best_val_loss"] == pytest.approx(6.134 + 0.05)
    assert (row["best_epoch"], row["best_step"]) == (7, 55)
    assert row["train_val_gap"] == pytest.approx(6.502 - 0.416)
    assert row["wall_seconds"] == 224.0 and row["model.drop_rate"] == 0.1
    meta = json.loads(sidecar_path(root / "summary.csv").read_text())
    assert meta["baseline"] == "book" and meta["variants"] == ["book", "no-dropout", "lr-1e-3"]
    assert "training study" in meta["experiment"] and len(meta["parts"]) == len(OFFSETS)
    assert list(samples["run"]) == list(summary["run"])
    assert (samples["epoch"] == 10).all()
    assert samples.iloc[0]["text"] == "Every effort moves you book 123 after epoch 10"
    assert sidecar_path(root / "final_samples.csv").is_file()


def test_t_quantile_matches_tables():
    for df, expected in T95.items():
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(0.025, 2) == pytest.approx(-4.302653, abs=1e-6)
    assert t_quantile(0.95, 5) == pytest.approx(2.015048, abs=1e-6)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-5)


def test_seed_spread_by_hand(study):
    _, summary, _, _ = study
    spread = seed_spread(summary).set_index("variant")
    book = spread.loc["book"]
    assert book["n"] == 3 and book["mean"] == pytest.approx(6.452) and book["sd"] == pytest.approx(0.05)
    half = 4.302653 * 0.05 / math.sqrt(3)
    assert (book["ci_low"], book["ci_high"]) == pytest.approx((6.452 - half, 6.452 + half), abs=1e-6)
    assert (book["min"], book["max"]) == pytest.approx((6.402, 6.502))
    lr = spread.loc["lr-1e-3"]
    assert lr["n"] == 2 and lr["sd"] == pytest.approx(0.15 / math.sqrt(2))
    assert lr["ci_high"] - lr["mean"] == pytest.approx(12.706205 * 0.15 / 2, abs=1e-5)
    single = seed_spread(summary[summary["run"] == "book-seed123"]).iloc[0]
    assert single["n"] == 1 and math.isnan(single["sd"]) and math.isnan(single["ci_low"])


def test_variant_effects_paired_and_welch(study):
    _, summary, _, _ = study
    effects = variant_effects(summary, "book").set_index("variant")
    paired = effects.loc["no-dropout"]
    assert paired["method"] == "paired by seed" and paired["n"] == 3
    half = 4.302653 * 0.01 / math.sqrt(3)  # the per-seed differences are −0.21, −0.20, −0.19
    assert paired["difference"] == pytest.approx(-0.2)
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx((-0.2 - half, -0.2 + half), abs=1e-6)
    assert paired["verdict"] == "helped"
    welch = effects.loc["lr-1e-3"]
    va, vb = 0.15**2 / 2 / 2, 0.05**2 / 3
    df = (va + vb) ** 2 / (va**2 / 1 + vb**2 / 2)
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    assert welch["method"] == "Welch" and (welch["n"], welch["n_baseline"]) == (2, 3)
    assert welch["difference"] == pytest.approx(0.023)
    assert welch["ci_high"] == pytest.approx(0.023 + half) and welch["verdict"] == "no clear difference"
    hurt = variant_effects(summary.assign(final_val_loss=-summary["final_val_loss"]), "book")
    assert hurt.set_index("variant").loc["no-dropout", "verdict"] == "hurt"
    changes = variant_changes(summary, "book")
    assert changes["book"] == [] and changes["no-dropout"] == ["model.drop_rate 0.1 → 0.0"]
    assert changes["lr-1e-3"] == ["training.learning_rate 0.0004 → 0.001"]


def test_book_is_typical_only_with_the_books_settings(study, tmp_path):
    _, summary, _, _ = study
    typical = book_is_typical(summary, "book")
    assert typical["comparable"] and typical["differences"] == []
    assert typical["book_value"] == 6.452 and typical["verdict"] == "typical"
    assert typical["z"] == pytest.approx(0.0, abs=1e-9) and typical["within_range"]
    assert typical["pi_high"] - 6.452 == pytest.approx(4.302653 * 0.05 * math.sqrt(4 / 3), abs=1e-6)
    assert typical["book_seed_value"] == pytest.approx(6.452)
    assert book_is_typical(summary, "book", book_value=7.5)["verdict"] == "higher than usual"
    assert book_is_typical(summary, "no-dropout")["differences"] == ["model.drop_rate: 0.0, the book 0.1"]
    tiny, _, _ = make_study(tmp_path, book=False)
    other = book_is_typical(tiny, "book")
    assert not other["comparable"] and other["verdict"] == "not comparable"
    assert "model.context_length: 32, the book 256" in other["differences"]
    assert "corpus: t.txt, the book The Verdict" in other["differences"]
    assert book_settings_differences({}) and float(BOOK_LOSS_LINES[-1].split()[-1]) == 6.452


# --------------------------------------------------------------------------- figure and report


def test_figure_draws_each_variant(study, tmp_path):
    root, _, _, runs = study
    histories = [r["history"] for r in runs]
    fig = training_study_figure(root / "summary.csv", histories, baseline="book")
    curves = fig.axes[0]
    gids = sorted(line.get_gid() for line in curves.get_lines() if line.get_gid())
    variants = ["book", "lr-1e-3", "no-dropout"]
    assert gids == sorted([f"{v}:{s}" for v in [*variants, "printed"] for s in ("train", "val")])
    assert len(curves.collections) == 2 * len(variants)  # a band for each variant's two losses
    (book_val,) = [line for line in curves.get_lines() if line.get_gid() == "printed:val"]
    assert list(book_val.get_ydata()) == list(BOOK["val_loss"])
    assert book_val.get_xdata()[-1] == pytest.approx(86 / 9)  # step 85 of 9 per epoch
    plt.close(fig)
    png, pdf = tmp_path / "study.png", tmp_path / "study.pdf"
    plot_training_study(root / "summary.csv", histories, png, pdf, baseline="book")
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 1_000
    tiny = tmp_path / "tiny"
    _, _, tiny_runs = make_study(tiny, book=False)
    fig = training_study_figure(tiny / "summary.csv", [r["history"] for r in tiny_runs])
    assert not [line for line in fig.axes[0].get_lines() if str(line.get_gid()).startswith("printed")]
    plt.close(fig)


def render(root: Path, runs: list[dict], out: Path, baseline: str = "book") -> tuple[str, str]:
    """The report of the study in ``root``, rendered as the pipeline does: its HTML and its visible text.

    An empty ``baseline`` leaves the report to take the summary's first variant."""
    png = out / "study.png"
    plot_training_study(root / "summary.csv", [r["history"] for r in runs], png, out / "study.pdf")
    params = {
        "summary_csv": root / "summary.csv",
        "samples_csv": root / "final_samples.csv",
        "figure_png": png,
        "baseline": baseline,
        "confidence": 0.95,
    }
    notebook = REPO / "workflow" / "notebooks" / "training_study.ipynb"
    page = render_report(notebook, params, out / "report.ipynb", out / "report.html").read_text()
    text = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.DOTALL)
    text = re.sub(r"</?(?:code|strong|em)\b[^>]*>", "", text)  # inline markup, as tests/test_notebooks.py
    return page, re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def test_report_answers_from_the_artifacts(study, tmp_path):
    root, _, _, runs = study
    page, text = render(root, runs, tmp_path)
    assert not re.search(r'class="[^"]*(jp-InputArea-editor|hl-ipython3)', page), "code is visible"
    assert all("jp-mod-noInput" in c for c in re.findall(r'class="jp-Cell jp-CodeCell[^"]*"', page))
    answer = text[text.index("Answer.") : text.index("Left: the validation loss")]
    assert "Across 3 seeds, the final validation loss of the baseline book is 6.452 ± 0.050" in answer
    assert "the book's 6.452 is typical: inside the 95% prediction interval of a single run" in answer
    assert "no-dropout (model.drop_rate 0.1 → 0.0) helped: its final validation loss is 0.200 lower" in answer
    assert "−0.225 to −0.175, paired by seed over 3 seeds" in answer
    assert "lr-1e-3" in answer and "no clear difference" in answer and "Welch" in answer
    assert page.index("Answer.") < page.index("<img") < page.index("How this was produced")
    assert "Every effort moves you no-dropout 125 after epoch 10" in text
    assert "machine: Test CPU, 2 cores, torch 2.0 (AVX2 kernels, 2 threads)" in text and not re.search(
        r"\b(True|False|None|nan)\b", text
    )


def test_report_does_not_compare_other_settings_with_the_book(tmp_path):
    runs = [
        write_run(tmp_path, v, s, book=False) for v, s in [("book", 123), ("book", 124), ("no-dropout", 124)]
    ]
    summarize_runs(runs, tmp_path / "summary.csv", tmp_path / "final_samples.csv")
    _, text = render(tmp_path, runs, tmp_path, baseline="")
    answer = text[text.index("Answer.") : text.index("Left: the validation loss")]
    assert "Across 2 seeds, the final validation loss of the baseline book is 6.477 ± 0.035" in answer
    assert "The book's 6.452 does not apply here" in answer
    assert "model.context_length: 32, the book 256" in answer
    assert "typical" not in answer and "crosses" not in text
    # 6.302 against the mean of 6.452 and 6.502; one seed against two: no interval
    assert "no-dropout (model.drop_rate 0.1 → 0.0): −0.175 against the baseline; too few seeds" in answer
