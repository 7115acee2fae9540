"""Figures of the decoding experiments: every figure is written as a non-empty PNG and PDF."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from gptlab.experiments import determinism, figures, pizza, sizes, sweep
from gptlab.experiments.determinism import DeterminismGrid
from gptlab.experiments.sizes import SizesGrid
from gptlab.experiments.sweep import SweepGrid
from gptlab.io import save_figure
from gptlab.tokenizer import get_tokenizer
from tests.conftest import make_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def save(fig, stem):
    return save_figure(fig, [stem.with_suffix(".png"), stem.with_suffix(".pdf")])


def assert_written(paths, stem):
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    assert paths == [png, pdf]
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Small real experiment outputs, written to CSV as the pipeline would."""
    out = tmp_path_factory.mktemp("tables")
    models = {"a": make_model(), "b": make_model(seed=None, n_layers=1)}
    tok = get_tokenizer()
    sweep.write_sweep(
        out / "gen.csv",
        out / "cells.csv",
        out / "rec.csv",
        models,
        tok,
        SweepGrid(
            ["Every effort moves you"],
            temperatures=(0.0, 1.0, 2.0),
            top_ks=(1, 5, None),
            seeds=(1, 2),
            max_new_tokens=4,
        ),
        train_text="Every effort moves you toward the studio.",
    )
    losses = pd.DataFrame({"model": ["a", "b"], "train_loss": [9.1, 9.3], "val_loss": [9.4, 9.6]})
    sizes.write_sizes(
        out / "sg.csv",
        out / "summary.csv",
        out / "side.csv",
        models,
        tok,
        SizesGrid(["Hello"], seeds=(1, 2), max_new_tokens=4),
        losses=losses,
    )
    small = make_model(seed=None, vocab_size=97, context_length=16)
    determinism.write_determinism(
        out / "det.csv",
        small,
        torch.tensor([[1, 2]]),
        grid=DeterminismGrid(max_new_tokens=3, top_ks=(None, 1), batch_sizes=(1, 2), runs=2),
    )
    pizza.write_pizza_sweep(out / "pizza.csv", temperatures=[0.1, 1.0, 5.0], num_draws=300)
    pizza.write_next_token_probabilities(
        out / "next.csv", models, tok, ["I ate a", "My favourite food is"], [0.5, 1.0, 2.0]
    )
    return out


def test_toy_distributions(tmp_path):
    assert_written(save(figures.plot_toy_distributions(), tmp_path / "toy"), tmp_path / "toy")


def test_pizza_sweep_figure_from_csv(tables, tmp_path):
    assert_written(save(figures.plot_pizza_sweep(tables / "pizza.csv"), tmp_path / "p"), tmp_path / "p")
    with pytest.raises(ValueError, match="token 'pasta'"):
        figures.plot_pizza_sweep(tables / "pizza.csv", token="pasta")


def test_next_token_probability_figure(tables, tmp_path):
    fig = figures.plot_next_token_probability(tables / "next.csv")
    assert len(fig.axes) == 2  # one panel per prompt
    assert_written(save(fig, tmp_path / "n"), tmp_path / "n")


def test_one_heatmap_per_metric(tables, tmp_path):
    written = figures.write_all_heatmaps(tables / "cells.csv", tmp_path, formats=("png",))  # PDF: other tests
    names = {p.name for p in written}
    for metric in ("distinct_1", "distinct_2", "repetition_rate", "mean_logprob", "verbatim_span"):
        assert f"heatmap_{metric}.png" in names
    assert all(p.stat().st_size > 1000 for p in written)
    fig = figures.plot_sweep_heatmap(tables / "cells.csv", "distinct_1")
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (3, 3)  # temperatures × top-k
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "5", "all"]
    with pytest.raises(ValueError, match="metric 'beauty'"):
        figures.plot_sweep_heatmap(tables / "cells.csv", "beauty")


def test_determinism_table_figure(tables, tmp_path):
    stem = tmp_path / "det"
    assert_written(save(figures.plot_determinism_table(tables / "det.csv"), stem), stem)


def test_size_comparison_bars_include_losses(tables, tmp_path):
    fig = figures.plot_size_comparison(tables / "summary.csv")
    titles = [ax.get_title() for ax in fig.axes]
    assert "training loss" in titles and "validation loss" in titles and "distinct-1" in titles
    assert_written(save(fig, tmp_path / "s"), tmp_path / "s")
