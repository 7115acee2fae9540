"""The figure of exercise 5.3: distinct outputs of each way of calling generate, against the book."""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..common import read_table, top_k_order
from .style import FONT_SIZE, outer_labels, panel_grid, styled, suptitle

# --- 5.3 -----------------------------------------------------------------------------------------


def _bool(series: pd.Series) -> pd.Series:
    """True/False as written by pandas, whether read back as booleans or as text."""
    return series.astype(str).str.lower() == "true"


def _determinism_setting(row, with_cache: bool) -> str:
    rng = "global RNG" if row["rng"] == "global" else "per-row RNG"
    label = f"{rng} · {row['seeding']} seeds · batch {int(row['batch_size'])}"
    if with_cache:
        label += " · cache" if str(row["use_cache"]).lower() == "true" else " · no cache"
    return label


def _determinism_frame(table) -> pd.DataFrame:
    """The audit with the setting of each row as one label and the booleans as booleans."""
    df = read_table(table).copy()
    with_cache = "use_cache" in df.columns and df["use_cache"].nunique() > 1
    df["top_k_label"] = df["top_k_label"].astype(str)
    df["setting"] = [_determinism_setting(row, with_cache) for _, row in df.iterrows()]
    df["possible"] = df["runs"].astype(int) * df["batch_size"].astype(int)
    for col in ("identical_across_runs", "expected_deterministic", "expected_greedy", "as_expected"):
        df[col] = _bool(df[col])
    return df


DETERMINISM_COLOURS = {True: "C0", False: "C1"}  # the book expects deterministic / varying output
DETERMINISM_MARKERS = {True: "o", False: "X"}  # observed: every run the same / runs differed


def _determinism_panel(ax, d: pd.DataFrame, rows: dict):
    y = d["setting"].map(rows).to_numpy()
    ax.hlines(y, 1, d["possible"], color="0.85", lw=5, zorder=1)
    for (expected, observed), g in d.groupby(["expected_deterministic", "identical_across_runs"]):
        ax.scatter(
            g["n_distinct"],
            g["setting"].map(rows),
            marker=DETERMINISM_MARKERS[observed],
            s=45,
            color=DETERMINISM_COLOURS[expected],
            zorder=3,
        )
    wrong = d[~d["as_expected"]]
    ax.scatter(wrong["n_distinct"], wrong["setting"].map(rows), s=160, fc="none", ec="red", lw=1.5, zorder=4)
    ax.set_yticks(list(rows.values()), list(rows))
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", color="0.92", zorder=0)


def _determinism_legend(fig):
    handles = [
        Line2D([], [], color="0.85", lw=5, label="possible: 1 to runs × batch"),
        Line2D([], [], ls="", marker="s", ms=8, color="C0", label="the book: deterministic"),
        Line2D([], [], ls="", marker="s", ms=8, color="C1", label="the book: varies between runs"),
        Line2D([], [], ls="", marker="o", ms=7, color="0.3", label="observed: every run the same"),
        Line2D([], [], ls="", marker="X", ms=7, color="0.3", label="observed: runs differed"),
        Line2D([], [], ls="", marker="o", ms=11, mfc="none", mec="red", label="not as the book says"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)


@styled
def plot_determinism(table):
    """5.3 as a chart: distinct outputs over the repeated runs of every setting, against the book.

    One panel per temperature and top-k. Each row is one way of calling ``generate`` (random-number
    source, seeding, batch size); the dot is the number of distinct token sequences among all rows of
    all runs (the grey bar runs to the most there could be), its colour the book's expectation
    (deterministic or not), its shape what happened (every run the same or not); a red ring marks a
    setting that did not behave as the book says.
    """
    df = _determinism_frame(table)
    order = top_k_order(df["top_k_label"])
    keys = sorted(
        set(zip(df["temperature"], df["top_k_label"], strict=True)), key=lambda k: (k[0], order.index(k[1]))
    )
    rows = {s: i for i, s in enumerate(dict.fromkeys(df["setting"]))}
    fig, axes, ncols = panel_grid(
        len(keys), (2.3, 0.3 * len(rows) + 0.8), extra=(2.3, 0.9), sharex=True, sharey=True
    )
    for ax, (t, k) in zip(axes, keys, strict=True):
        d = df[(df["temperature"] == t) & (df["top_k_label"] == k)]
        _determinism_panel(ax, d, rows)
        kind = "greedy" if d["expected_greedy"].all() else "sampling"
        ax.set_title(f"T = {t:g}, top-k = {k}: {kind}", fontsize=FONT_SIZE)
    axes[0].set_xlim(0.5, df["possible"].max() + 0.5)
    outer_labels(fig, axes, ncols, "distinct outputs", "", each_x=True)
    runs = " or ".join(map(str, sorted(df["runs"].astype(int).unique())))
    model = f"model {df['model'].iloc[0]}, " if "model" in df.columns else ""
    suptitle(fig, f"Which settings make generate deterministic? ({model}{runs} runs per setting)")
    _determinism_legend(fig)
    return fig
