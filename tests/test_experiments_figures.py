"""Figures of the experiments: what each draws, that it is readable, that it is written as PNG and PDF."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.text import Text

from gptlab.experiments import determinism, figures, pizza, sizes, sweep
from gptlab.experiments.determinism import DeterminismGrid
from gptlab.experiments.losses import BOOK_LOSSES
from gptlab.experiments.sizes import SizesGrid
from gptlab.experiments.sweep import SweepGrid
from gptlab.io import save_figure
from gptlab.tokenizer import get_tokenizer
from tests.conftest import make_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def save(fig, stem):
    return save_figure(fig, [stem.with_suffix(".png"), stem.with_suffix(".pdf")])


def assert_written(paths, stem):
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    assert paths == [png, pdf]
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def texts(fig) -> list[Text]:
    """Every visible, non-empty text of a figure."""
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def suptitle(fig) -> str:
    """The figure's title with its line breaks (wrapped to the width) as spaces."""
    return " ".join(fig.get_suptitle().split())


def dots(ax) -> list[PathCollection]:
    """The scatter plots of ``ax`` that hold points."""
    return [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]


def assert_readable(fig):
    """At most MAX_WIDTH inches wide, no text under MIN_FONT_SIZE, nothing drawn outside the figure."""
    fig.canvas.draw()
    width, height = fig.get_size_inches()
    assert width <= figures.MAX_WIDTH + 1e-9
    small = {t.get_text(): t.get_fontsize() for t in texts(fig) if t.get_fontsize() < figures.MIN_FONT_SIZE}
    assert not small
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    tol = 0.02
    assert drawn.x0 >= -tol and drawn.y0 >= -tol and drawn.x1 <= width + tol and drawn.y1 <= height + tol


def error_bar_lows(ax) -> list[float]:
    """The lower ends of the error bars drawn on ``ax``."""
    return [
        float(seg[:, 1].min())
        for coll in ax.collections
        if isinstance(coll, LineCollection)
        for seg in coll.get_segments()
    ]


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


@pytest.fixture(scope="module")
def model_losses():
    """5.5's table: a model of a size the book reports, and one it does not."""
    rows = [("gpt2-124M", 10.98, 11.01), ("trained", 9.42, 9.87)]
    return pd.DataFrame(
        [{"model": m, "split": s, "loss": v} for m, tr, va in rows for s, v in (("train", tr), ("val", va))]
    )


def history():
    """A pretraining history of two epochs, the second after a restore."""
    return pd.DataFrame(
        {
            "run": ["pretrain"] * 3 + ["resume"] * 3,
            "epoch": [1, 1, 1, 2, 2, 2],
            "global_step": [0, 5, 10, 15, 20, 25],
            "tokens_seen": [512, 3072, 5632, 8192, 10752, 13312],
            "train_loss": [9.8, 8.1, 7.0, 6.2, 5.9, 5.5],
            "val_loss": [9.9, 8.3, 7.4, 6.9, 6.8, 6.7],
        }
    )


FIGURES = {
    "toy": lambda t, _: figures.plot_toy_distributions(),
    "pizza_sweep": lambda t, _: figures.plot_pizza_sweep(t / "pizza.csv"),
    "next_token": lambda t, _: figures.plot_next_token_probability(t / "next.csv"),
    "heatmap": lambda t, _: figures.plot_sweep_heatmap(t / "cells.csv", "mean_logprob"),
    "determinism": lambda t, _: figures.plot_determinism(t / "det.csv"),
    "sizes": lambda t, _: figures.plot_size_comparison(t / "summary.csv"),
    "model_losses": lambda _, losses: figures.plot_model_losses(losses),
    "losses": lambda t, _: figures.plot_losses(history()),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_is_readable_at_report_size(name, tables, model_losses, tmp_path):
    fig = FIGURES[name](tables, model_losses)
    assert_readable(fig)
    assert_written(save(fig, tmp_path / name), tmp_path / name)


def test_toy_distributions_name_their_axes():
    fig = figures.plot_toy_distributions()
    (ax,) = fig.axes
    assert ax.get_ylabel() == "probability" and "toy vocabulary" in ax.get_xlabel()
    assert len(ax.patches) == 3 * 9  # three temperatures × nine words


def test_pizza_sweep_figure_from_csv(tables):
    fig = figures.plot_pizza_sweep(tables / "pizza.csv")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_ylim()[0] == 0
    with pytest.raises(ValueError, match="token 'pasta'"):
        figures.plot_pizza_sweep(tables / "pizza.csv", token="pasta")


def test_next_token_probability_figure_has_one_title(tables):
    fig = figures.plot_next_token_probability(tables / "next.csv")
    assert len(fig.axes) == 2  # one panel per prompt
    assert fig.get_suptitle() == "Probability that ' pizza' is the next token"
    assert titles(fig) == ["after 'I ate a'", "after 'My favourite food is'"]  # the prompt, nothing repeated
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    uniform = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("uniform")]
    assert uniform and uniform[0].get_ydata()[0] == pytest.approx(1 / 50257)

    one = pd.read_csv(tables / "next.csv")
    fig = figures.plot_next_token_probability(one[one["prompt"] == "I ate a"])
    assert len(fig.axes) == 1 and fig.get_suptitle() == ""
    assert titles(fig) == ["Probability that ' pizza' is the next token after 'I ate a'"]


def test_next_token_log_axis_labels_ticks_within_a_decade():
    df = pd.DataFrame(
        {
            "model": "m",
            "prompt": "p",
            "target": " pizza",
            "temperature": [0.5, 1.0, 2.0],
            "prob": [2.1e-5, 3.0e-5, 4.2e-5],
            "rank": 9,
            "vocab_size": 50257,
        }
    )
    fig = figures.plot_next_token_probability(df)
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels(minor=True) if t.get_text()]
    assert labels and all(r"\times10^{-5}" in label for label in labels)


def test_one_heatmap_per_metric(tables, tmp_path):
    written = figures.write_all_heatmaps(tables / "cells.csv", tmp_path, formats=("png",))  # PDF: other tests
    names = {p.name for p in written}
    for metric in ("distinct_1", "distinct_2", "repetition_rate", "mean_logprob", "verbatim_span"):
        assert f"heatmap_{metric}.png" in names
    assert "heatmap_seed_disagreement.png" in names
    assert all(p.stat().st_size > 1000 for p in written)
    fig = figures.plot_sweep_heatmap(tables / "cells.csv", "distinct_1")
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (3, 3)  # temperatures × top-k
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "5", "all"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0 (greedy)", "1", "2"]
    assert any("all = no top-k filtering" in t.get_text() for t in texts(fig))
    with pytest.raises(ValueError, match="metric 'beauty'"):
        figures.plot_sweep_heatmap(tables / "cells.csv", "beauty")


@pytest.mark.parametrize("metric", [*figures.HEATMAP_SCALES])
def test_heatmap_panels_share_one_colour_scale_and_one_bar(tables, metric):
    fig = figures.plot_sweep_heatmap(tables / "cells.csv", metric)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["a", "b"]
    limits = {ax.images[0].get_clim() for ax in panels}
    assert len(limits) == 1  # one colour scale for every model
    bars = [ax for ax in fig.axes if not ax.images]
    label, direction, bounds, _ = figures.HEATMAP_SCALES[metric]
    assert suptitle(fig).startswith(f"{label} ({direction})")
    if bounds == (0.0, 1.0):  # a share: the same colours in every figure
        assert limits == {(0.0, 1.0)} and len(bars) == 1
    assert len(bars) <= 1
    cells = sum(ax.images[0].get_array().size for ax in panels)
    assert sum(len(ax.texts) for ax in panels) == cells  # every cell annotated


def test_heatmap_colour_scale_spans_all_models():
    cells = pd.DataFrame(
        {
            "model": ["a", "a", "b", "b"],
            "temperature": [0.0, 1.0, 0.0, 1.0],
            "top_k_label": ["all"] * 4,
            "mean_logprob_mean": [-1.0, -2.0, -3.0, -9.0],
        }
    )
    fig = figures.plot_sweep_heatmap(cells, "mean_logprob")
    assert {ax.images[0].get_clim() for ax in fig.axes if ax.images} == {(-9.0, -1.0)}
    assert "higher = more likely" in suptitle(fig)


def test_heatmap_of_one_value_has_no_colour_bar():
    cells = pd.DataFrame(
        {
            "model": ["a", "a", "b", "b"],
            "temperature": [0.0, 1.0, 0.0, 1.0],
            "top_k_label": ["1", "all", "1", "all"],
            "verbatim_span_mean": [0.0] * 4,
        }
    )
    fig = figures.plot_sweep_heatmap(cells, "verbatim_span")
    assert all(ax.images for ax in fig.axes)  # two panels, no colour bar
    assert len(fig.axes) == 2
    assert "every cell is 0.0" in suptitle(fig)


def test_heatmap_panels_of_three_models_and_more_wrap_at_three_columns():
    cells = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(5) for _ in range(2)],
            "temperature": [0.0, 1.0] * 5,
            "top_k_label": ["all"] * 10,
            "distinct_1_mean": np.linspace(0, 1, 10),
        }
    )
    fig = figures.plot_sweep_heatmap(cells, "distinct_1")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5  # no empty panel
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == 3
    assert fig.get_size_inches()[0] <= figures.MAX_WIDTH


def test_determinism_chart_counts_distinct_outputs_per_setting(tables):
    df = pd.read_csv(tables / "det.csv")
    fig = figures.plot_determinism(df)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert titles(fig) == [
        "T = 0, top-k = 1: greedy",
        "T = 0, top-k = all: greedy",
        "T = 1, top-k = 1: greedy",
        "T = 1, top-k = all: sampling",
    ]
    assert not any(ax.tables for ax in fig.axes)  # a chart, not a table
    settings = len(df) // len(panels)
    for ax in panels:
        assert (
            sum(len(c.get_offsets()) for c in dots(ax)) == settings
        )  # one dot per setting (no red rings: all as the book says)
        assert len(ax.get_yticks()) == settings
    assert panels[0].get_xlim()[1] >= (df["runs"] * df["batch_size"]).max()
    assert fig.legends and "Which settings make generate deterministic?" in suptitle(fig)


def test_determinism_chart_rings_settings_that_surprise(tables):
    df = pd.read_csv(tables / "det.csv")
    df.loc[df.index[:3], "as_expected"] = False
    fig = figures.plot_determinism(df)
    rings = [c for ax in fig.axes for c in dots(ax) if len(c.get_facecolors()) == 0]
    assert sum(len(c.get_offsets()) for c in rings) == 3


def test_size_comparison_groups_metrics_on_comparable_scales(tables):
    fig = figures.plot_size_comparison(tables / "summary.csv")
    assert titles(fig) == [  # no memorisation panel: no training text was given
        "diversity and repetition",
        "likelihood of its own text",
        "loss on the corpus (5.5)",
    ]
    assert all(ax.lines or ax.collections for ax in fig.axes)  # no empty panel
    assert fig.axes[0].get_ylim() == pytest.approx((-0.03, 1.03))
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["training", "validation"]
    assert fig.legends and "Model sizes" in suptitle(fig)


def test_size_comparison_error_bars_stay_in_range():
    summary = pd.DataFrame(
        {
            "model": ["gpt2-124M", "gpt2-1558M"],
            "parameters": [124_439_808, 1_557_611_200],
            "n": [9, 9],
            "distinct_1_mean": [0.95, 0.9],
            "distinct_1_std": [0.2, 0.3],
            "repetition_rate_mean": [0.02, 0.0],
            "repetition_rate_std": [0.05, 0.0],
            "mean_logprob_mean": [-0.1, -3.0],
            "mean_logprob_std": [0.4, 0.5],
            "verbatim_span_mean": [0.5, 1.0],
            "verbatim_span_std": [0.71, 2.5],
        }
    )
    fig = figures.plot_size_comparison(summary)
    shares, logprob, span = fig.axes
    for ax in (shares, span):  # a share or a length is never negative
        assert min(error_bar_lows(ax)) >= 0
    highs = [float(s[:, 1].max()) for c in shares.collections for s in c.get_segments()]
    assert max(highs) <= 1  # nor a share above 1
    assert max(float(s[:, 1].max()) for c in logprob.collections for s in c.get_segments()) <= 0
    assert min(error_bar_lows(span)) == 0  # 0.5 - 0.71 was cut at 0
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["gpt2-124M (124M parameters)", "gpt2-1558M (1,558M parameters)"]


def test_size_comparison_of_one_model_says_so(tables):
    summary = pd.read_csv(tables / "summary.csv").head(1)
    fig = figures.plot_size_comparison(summary)
    assert "the only model configured" in suptitle(fig) and not fig.legends
    assert all(ax.lines or ax.collections for ax in fig.axes)
    with pytest.raises(ValueError, match="no metric"):
        figures.plot_size_comparison(summary[["model", "n"]])


def test_model_losses_zoom_on_the_values_and_mark_the_book(model_losses):
    fig = figures.plot_model_losses(model_losses)
    train, val = fig.axes
    assert titles(fig) == ["training split", "validation split"]
    low, high = train.get_ylim()
    assert val.get_ylim() == (low, high)  # one scale for both splits
    assert 0 < low < BOOK_LOSSES["124M"]["val"] and high > 11.01  # not from 0; the book's values in view
    for ax, split in ((train, "train"), (val, "val")):
        (bar,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        ((x0, y0), (x1, y1)) = bar.get_segments()[0]
        assert y0 == y1 == BOOK_LOSSES["124M"][split] and x0 < 0 < x1  # drawn at gpt2-124M only
        labels = [t.get_text() for t in ax.texts]
        assert f"book {BOOK_LOSSES['124M'][split]:.4f}" in labels
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["the book's value for OpenAI's weights"]
    assert fig.get_supylabel() == "cross-entropy loss (nats per token)"


def test_model_losses_without_a_book_size_draw_no_book_value(model_losses):
    fig = figures.plot_model_losses(model_losses[model_losses["model"] == "trained"])
    assert not fig.legends and not any(
        isinstance(c, LineCollection) for ax in fig.axes for c in ax.collections
    )


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("gpt2-124M", "124M"),
        ("1558M", "1558M"),
        ("gpt2-1558M-fast", "1558M"),
        ("x1124M", None),
        ("trained", None),
    ],
)
def test_book_size_of_a_model_name(name, size):
    assert figures.book_size(name) == size


def test_losses_figure_marks_the_restore():
    fig = figures.plot_losses(history())
    bottom, top = fig.axes
    assert bottom.get_ylabel() == "cross-entropy loss (nats per token)"
    assert bottom.get_xlabel() == "epochs" and top.get_xlabel() == "tokens seen"
    assert any(t.get_text() == "restored from checkpoint" for t in bottom.texts)
