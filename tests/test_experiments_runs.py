"""Exercises 5.2 (sweep), 5.3 (determinism) and 5.6 (sizes), run on tiny models."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from llms_from_scratch.ch05 import generate as book_generate

from gptlab.experiments import determinism, sampling, sizes, sweep
from gptlab.experiments.determinism import DeterminismGrid
from gptlab.experiments.sampling import SamplingGrid
from gptlab.experiments.sizes import SizesGrid
from gptlab.experiments.sweep import SweepGrid
from gptlab.generation import generate_text_simple
from gptlab.tokenizer import get_tokenizer
from tests.conftest import make_model

PROMPT = "Every effort moves you"
pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = [(0.0, None), (1.0, 5), (1.5, None)]


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


@pytest.fixture(scope="module")
def tiny():
    return make_model()


@pytest.fixture(scope="module")
def generations(tiny, tok):
    # The training text contains the greedy continuation, so greedy rows must report copying it.
    greedy = generate_text_simple(tiny, torch.tensor([tok.encode(PROMPT)]), 8, 64)[0, 4:].tolist()
    train_text = "It was a quiet studio." + tok.decode(greedy) + " The end."
    grid = SamplingGrid([PROMPT], SETTINGS, seeds=[1, 2], max_new_tokens=8, batch_size=4)
    df = sampling.run_generations({"tiny": tiny}, tok, grid, train_text)
    return df, greedy, train_text


# ---------------------------------------------------------------- 5.2


def test_generation_table_columns_and_metrics(generations, tok):
    df, greedy, train_text = generations
    assert list(df.columns) == sampling.GENERATION_COLUMNS and len(df) == len(SETTINGS) * 2
    assert df["top_k_label"].tolist() == ["all", "all", "5", "5", "all", "all"]
    g = df[df["temperature"] == 0.0]
    assert g["text"].nunique() == 1 and g["token_ids"].iloc[0] == " ".join(map(str, greedy))
    for _, row in df.iterrows():
        ids = [int(t) for t in row["token_ids"].split()]
        assert row["text"] == tok.decode(ids) and row["num_generated"] == 8
        assert row["distinct_1"] == pytest.approx(len(set(ids)) / len(ids))
        assert row["mean_logprob"] < 0
        if row["verbatim_span"] > 0:
            assert row["verbatim_text"] in train_text
    if tok.encode(tok.decode(greedy)) == greedy:  # the text re-tokenises the same way
        assert (g["verbatim_span"] == 8).all()


def test_rows_do_not_depend_on_batch_size(generations, tiny, tok, capsys):
    df, _, train_text = generations
    grid = SamplingGrid([PROMPT], SETTINGS, seeds=[1, 2], max_new_tokens=8, batch_size=1)
    again = sampling.run_generations({"tiny": tiny}, tok, grid, train_text)
    # A progress bar on stderr, one tick per batch of rows (here one row each).
    assert f"{len(df)}/{len(df)}" in capsys.readouterr().err
    pd.testing.assert_frame_equal(df.drop(columns="mean_logprob"), again.drop(columns="mean_logprob"))
    pd.testing.assert_series_equal(df["mean_logprob"], again["mean_logprob"], atol=1e-4, rtol=0)


def test_aggregate_cells(generations):
    df, _, _ = generations
    cells = sweep.aggregate_cells(df)
    assert len(cells) == len(SETTINGS) and (cells["n"] == 2).all()
    greedy = cells[cells["temperature"] == 0.0].iloc[0]
    assert greedy["seed_disagreement"] == 0.0 and greedy["unique_text_fraction"] == 0.5
    assert greedy["distinct_1_std"] == 0.0
    hot = cells[cells["temperature"] == 1.5].iloc[0]
    sub = df[df["temperature"] == 1.5]
    assert hot["mean_logprob_mean"] == pytest.approx(sub["mean_logprob"].mean())
    assert hot["unique_text_fraction"] == sub["text"].nunique() / 2
    assert hot["seed_disagreement"] == (1.0 if sub["text"].nunique() == 2 else 0.0)
    assert cells["top_k"].tolist()[1] == 5 and pd.isna(cells["top_k"].tolist()[0])
    with pytest.raises(ValueError, match="lacks columns"):
        sweep.aggregate_cells(df.drop(columns="distinct_2"))


@pytest.mark.parametrize(
    ("texts", "expected"),
    [(["a", "a", "a"], 0.0), (["a", "b", "c"], 1.0), (["a", "a", "b"], 2 / 3), (["a", "b"], 1.0)],
)
def test_seed_disagreement_is_the_share_of_seed_pairs_that_differ(texts, expected):
    assert sweep.seed_disagreement(texts) == pytest.approx(expected)


def test_seed_disagreement_needs_two_seeds():
    assert pd.isna(sweep.seed_disagreement(["a"]))


def _cells(**columns) -> pd.DataFrame:
    base = {
        "model": "m",
        "temperature": [0.0, 0.5, 1.0, 2.0, 3.0, 2.0],
        "top_k_label": ["all", "50", "all", "all", "all", "1"],
        "mean_logprob_mean": [-1.0, -2.0, -3.0, -6.0, -8.0, -1.0],
        "distinct_2_mean": [0.3, 0.7, 0.8, 0.99, 1.0, 0.3],
        "repetition_rate_mean": [0.5, 0.1, 0.05, 0.0, 0.0, 0.5],
        "verbatim_span_mean": [20.0, 3.0, 9.0, 1.0, 0.0, 20.0],
        "seed_disagreement": [0.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    }
    return pd.DataFrame(base | columns)


def test_recommend_settings_follows_its_rules():
    rec = sweep.recommend_settings(_cells()).set_index("criterion")
    assert list(rec.columns) == [c for c in sweep.RECOMMENDED_COLUMNS if c != "criterion"]
    pick = {c: (rec.loc[c, "temperature"], rec.loc[c, "top_k_label"]) for c in rec.index}
    assert pick["most_likely"] == (0.0, "all")  # greedy wins likelihood (tie with T = 2, k = 1: lower T)
    assert pick["most_likely_varied"] == (0.5, "50")
    assert pick["most_diverse"] == (3.0, "all")
    # the median log-prob of the sampling settings (T > 0, k != 1) is -4.5: T = 0.5 and 1 qualify below
    assert pick["balanced"] == (1.0, "all")
    assert pick["least_repetitive"] == (1.0, "all")
    assert pick["least_memorised"] == (0.5, "50")
    assert rec.loc["balanced", "threshold"] == -4.5 and pd.isna(rec.loc["most_diverse", "threshold"])
    assert rec.loc["most_diverse", "candidates"] == 4 and rec.loc["balanced", "candidates"] == 2
    assert "sampling settings" in rec.loc["most_diverse", "rule"]  # each rule states its criterion
    assert sweep.recommendation_gaps(_cells()).empty


def test_greedy_is_never_recommended_for_variety():
    # greedy is the most diverse here, yet only sampling settings are candidates for variety
    cells = _cells(distinct_2_mean=[1.0, 0.7, 0.8, 0.9, 0.95, 1.0], seed_disagreement=[0, 1, 1, 1, 1, 0])
    rec = sweep.recommend_settings(cells).set_index("criterion")
    for criterion in (
        "most_likely_varied",
        "most_diverse",
        "balanced",
        "least_repetitive",
        "least_memorised",
    ):
        assert rec.loc[criterion, "temperature"] > 0 and rec.loc[criterion, "top_k_label"] != "1"
    assert (rec.loc["most_diverse", "temperature"], rec.loc["most_diverse", "top_k_label"]) == (3.0, "all")


def test_no_recommendation_when_the_metric_does_not_differ():
    """The tiny model's case: every setting has distinct-2 = 1 and no repetition, and no seed varied."""
    cells = _cells(distinct_2_mean=1.0, repetition_rate_mean=0.0, seed_disagreement=0.0)
    rec = sweep.recommend_settings(cells)
    assert set(rec["criterion"]) == {"most_likely", "least_memorised"}
    gaps = sweep.recommendation_gaps(cells).set_index("criterion")
    assert list(gaps.columns) == ["model", "rule", "reason"]
    assert gaps.loc["most_diverse", "reason"].startswith("distinct-2 is 1 in every setting")
    assert gaps.loc["least_repetitive", "reason"].startswith("repetition rate is 0 in every setting")
    assert (
        gaps.loc["most_likely_varied", "reason"] == "no sampling setting gave a different text for every seed"
    )
    no_text = sweep.recommendation_gaps(_cells(verbatim_span_mean=float("nan"))).set_index("criterion")
    assert (
        no_text.loc["least_memorised", "reason"] == "longest copied span was not measured (no training text)"
    )


def test_every_model_gets_a_recommendation():
    """recommended.csv holds a set per model, even for a model whose metrics never differ."""
    flat = _cells(model="flat", distinct_2_mean=1.0, repetition_rate_mean=0.0, verbatim_span_mean=0.0)
    rec = sweep.recommend_settings(pd.concat([_cells(), flat], ignore_index=True))
    assert list(dict.fromkeys(rec["model"])) == ["m", "flat"]


def test_write_sweep(tmp_path, tiny, tok):
    paths = [tmp_path / n for n in ("gen.csv", "cells.csv", "rec.csv")]
    gens, cells, rec = sweep.write_sweep(
        *paths,
        {"tiny": tiny},
        tok,
        SweepGrid([PROMPT], temperatures=(0.0, 1.0), top_ks=(1, None), seeds=(3, 4), max_new_tokens=5),
    )
    assert len(gens) == 2 * 2 * 2 and len(cells) == 4 and set(rec["model"]) == {"tiny"}
    assert len(rec) + len(sweep.recommendation_gaps(cells)) == len(sweep.RULES)
    for path, df in zip(paths, (gens, cells, rec), strict=True):
        assert list(pd.read_csv(path).columns) == list(df.columns)
        meta = json.loads(path.with_name(path.stem + ".meta.json").read_text())
        assert meta["seeds"] == [3, 4] and meta["config"]["top_ks"] == ["1", "all"]
        assert meta["models"]["tiny"]["config"]["emb_dim"] == 32 and "torch" in meta["versions"]
    with pytest.raises(ValueError, match="top_k=0"):
        SweepGrid([PROMPT], top_ks=(0,))
    with pytest.raises(ValueError, match="temperature=-1.0"):
        SamplingGrid([PROMPT], [(-1, None)])
    with pytest.raises(ValueError, match="seeds is empty"):
        SamplingGrid([PROMPT], [(1.0, None)], seeds=[])
    with pytest.raises(ValueError, match="prompts is empty"):
        SizesGrid([])


# ---------------------------------------------------------------- 5.3


def test_determinism_audit_runs_the_matrix():
    model = make_model(vocab_size=97, context_length=16)
    idx = torch.tensor([[1, 2, 3]])
    grid = DeterminismGrid(max_new_tokens=6, top_ks=(None, 1, 5), batch_sizes=(1, 3), runs=2)
    df = determinism.determinism_audit(model, idx, grid)
    assert list(df.columns) == determinism.COLUMNS and len(df) == 2 * 3 * 2 * 2 * 2
    assert df["as_expected"].all(), df[~df["as_expected"]]
    greedy = df[(df["temperature"] == 0) | (df["top_k_label"] == "1")]
    assert greedy["identical_to_greedy"].all() and (greedy["n_distinct"] == 1).all()
    sampled = df[(df["temperature"] > 0) & (df["top_k_label"] != "1")]
    assert not sampled["identical_to_greedy"].any()
    assert sampled[sampled["seeding"] == "same"]["identical_across_runs"].all()
    assert not sampled[sampled["seeding"] == "different"]["identical_across_runs"].any()
    assert df[df["rng"] == "per_row"]["batch_invariant"].all()
    with pytest.raises(ValueError, match="runs=1"):
        DeterminismGrid(runs=1)
    with pytest.raises(ValueError, match="rngs has \\['shared'\\]"):
        DeterminismGrid(rngs=("global", "shared"))
    with pytest.raises(ValueError, match="one prompt"):
        determinism.determinism_audit(model, idx.expand(2, -1), grid)


def test_write_determinism(tmp_path):
    model = make_model(vocab_size=97, context_length=16)
    df = determinism.write_determinism(
        tmp_path / "det.csv",
        model,
        torch.tensor([[1, 2]]),
        "small",
        DeterminismGrid(max_new_tokens=4, top_ks=(None,), batch_sizes=(2,), runs=2),
    )
    back = pd.read_csv(tmp_path / "det.csv")
    assert list(back.columns) == ["model", *determinism.COLUMNS] and len(back) == len(df) == 2 * 2 * 2
    config = json.loads((tmp_path / "det.meta.json").read_text())["config"]
    assert config["runs"] == 2 and config["prompt_ids"] == [1, 2] and config["top_ks"] == ["all"]


# ---------------------------------------------------------------- 5.6


@pytest.fixture(scope="module")
def two_sizes(tiny):
    return {"small": tiny, "large": make_model(seed=7, emb_dim=48, n_layers=3)}


def test_compare_sizes_same_seeds_side_by_side_and_losses(two_sizes, tok):
    losses = pd.DataFrame({"model": ["small", "large"], "train_loss": [9.0, 8.0], "val_loss": [9.5, 8.7]})
    grid = SizesGrid([PROMPT], [(1.5, 50)], seeds=(123, 5), max_new_tokens=6)
    gens, summary, wide = sizes.compare_sizes(two_sizes, tok, grid, losses=losses)
    assert len(gens) == 4 and list(wide.columns) == [*sizes.SIDE_KEYS, "text[small]", "text[large]"]
    assert summary["model"].tolist() == ["small", "large"]
    assert summary["parameters"].tolist() == [
        sum(p.numel() for p in m.parameters()) for m in two_sizes.values()
    ]
    assert summary.set_index("model").loc["large", "val_loss"] == 8.7
    # seed 123 reproduces the book's torch.manual_seed(123) + generate for every size
    for name, model in two_sizes.items():
        torch.manual_seed(123)
        ids = book_generate(model, torch.tensor([tok.encode(PROMPT)]), 6, 64, temperature=1.5, top_k=50)
        text = wide[wide["seed"] == 123][f"text[{name}]"].iloc[0]
        assert text == tok.decode(ids[0, 4:].tolist())
    with pytest.raises(ValueError, match="none of the models"):
        sizes.summarise_sizes(gens, losses=losses.assign(model=["a", "b"]))
    with pytest.raises(ValueError, match="needs a 'model' column"):
        sizes.summarise_sizes(gens, losses=losses.drop(columns="model"))


def test_write_sizes_and_book_reference(tmp_path, two_sizes, tok):
    paths = [tmp_path / n for n in ("gen.csv", "summary.csv", "side.csv")]
    grid = SizesGrid([PROMPT, "I had always"], seeds=(1,), max_new_tokens=4)
    sizes.write_sizes(*paths, two_sizes, tok, grid)
    assert len(pd.read_csv(paths[2])) == 2 and all(p.with_name(p.stem + ".meta.json").exists() for p in paths)
    meta = json.loads((tmp_path / "gen.meta.json").read_text())
    assert meta["seeds"] == [1] and meta["config"]["settings"] == [{"temperature": 1.5, "top_k": "50"}]
    ref = sizes.check_book_reference(two_sizes["small"], tok, "124M")
    assert ref["text"].startswith(PROMPT) and ref["matches_book"] is False  # random weights, not GPT-2
    with pytest.raises(ValueError, match="size='7B'"):
        sizes.check_book_reference(two_sizes["small"], tok, "7B")
