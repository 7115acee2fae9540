"""Exercise 5.5: losses of pretrained models, on synthetic GPT-2 weights."""

# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from gptlab.data import create_book_loaders
from gptlab.experiments.losses import COLUMNS, evaluate_losses, write_losses_csv
from gptlab.gpt2 import load_gpt2
from gptlab.losses import calc_loss_loader
from gptlab.model import GPTModel
from tests.gpt2_fixtures import converted, synthetic_ckpt  # noqa: F401  (fixtures)

SHORT = dict(max_length=16, stride=16, batch_size=2)


@pytest.fixture(scope="module")
def text(small_text):
    """About 350 tokens: 9 training batches and 1 validation batch of 16-token windows."""
    return small_text[:1500]


def _random_model():
    torch.manual_seed(0)
    cfg = {
        "vocab_size": 50257,
        "context_length": 64,
        "emb_dim": 16,
        "n_heads": 2,
        "n_layers": 1,
        "drop_rate": 0.5,  # eval mode must switch this off
        "qkv_bias": False,
    }
    return GPTModel(cfg)


def _book_procedure(model, text, seed=123, **loader_kwargs):
    """What the book's exercise-5.5 solution does, written out."""
    torch.manual_seed(seed)
    train_loader, val_loader = create_book_loaders(text, **loader_kwargs, seed=None)
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        return calc_loss_loader(train_loader, model, "cpu"), calc_loss_loader(val_loader, model, "cpu")


@pytest.fixture(scope="module")
def two_models(converted, text):
    """Two models and their losses, computed once for the module."""
    gpt2, other = load_gpt2(converted), _random_model()
    return gpt2, other, evaluate_losses({"synthetic": gpt2, "random": other}, text, **SHORT)


def test_losses_follow_the_books_procedure(two_models, text):
    gpt2, other, frame = two_models
    assert list(frame.columns) == list(COLUMNS)
    assert list(zip(frame["model"], frame["split"], strict=True)) == [
        ("synthetic", "train"),
        ("synthetic", "val"),
        ("random", "train"),
        ("random", "val"),
    ]
    assert other.training is True  # the caller's mode is restored
    for name, model in (("synthetic", gpt2), ("random", other)):
        train, val = _book_procedure(model, text, **SHORT)
        rows = frame[frame["model"] == name].set_index("split")
        assert rows.loc["train", "loss"] == train and rows.loc["val", "loss"] == val
    assert (frame["perplexity"] == frame["loss"].map(math.exp)).all()
    assert frame["loss"].between(5, 20).all()  # near ln(50257) = 10.8 for random weights

    train_loader, val_loader = create_book_loaders(text, **SHORT)
    rows = frame[frame["model"] == "random"].set_index("split")
    assert rows.loc["train", "n_batches"] == len(train_loader)
    assert rows.loc["train", "n_tokens"] == len(train_loader) * 2 * 16
    assert rows.loc["val", "n_tokens"] == len(val_loader.dataset) * 16


def test_order_of_models_does_not_matter(two_models, converted, text):
    a = two_models[2]
    b = evaluate_losses({"random": _random_model(), "synthetic": load_gpt2(converted)}, text, **SHORT)
    key = ["model", "split"]
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    )


def test_models_given_as_paths_are_loaded(two_models, converted, text):
    by_path = evaluate_losses({"synthetic": converted.parent}, text, **SHORT)
    by_model = two_models[2].iloc[:2]
    pd.testing.assert_frame_equal(by_path, by_model)


def test_bad_input(converted, text, small_text):
    with pytest.raises(ValueError, match="models is empty"):
        evaluate_losses({}, text)
    with pytest.raises(ValueError, match="max_length=512 exceeds the context length 256 of model 'g'"):
        evaluate_losses({"g": load_gpt2(converted)}, small_text * 4, max_length=512, stride=512)
    with pytest.raises(TypeError, match=r"models\['n'\] is a int"):
        evaluate_losses({"n": 3}, text, **SHORT)


def test_csv_is_tidy_and_written_atomically(two_models, tmp_path):
    frame = two_models[2]
    out = write_losses_csv(frame, tmp_path / "ex5" / "losses.csv")
    assert sorted(p.name for p in out.parent.iterdir()) == ["losses.csv"]
    back = pd.read_csv(out)
    assert list(back.columns) == list(COLUMNS) and len(back) == 4
    assert back["loss"].tolist() == pytest.approx(frame["loss"].tolist(), rel=1e-15)
    with pytest.raises(ValueError, match=r"lacks columns \['perplexity'"):
        write_losses_csv(frame.drop(columns=["perplexity"]), tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_the_verdict_with_the_books_settings(converted, verdict_text):
    """The book's exact settings (max_length=stride=256, batch 2) on The Verdict: 9 + 1 batches."""
    frame = evaluate_losses({"gpt2-synthetic": load_gpt2(converted)}, verdict_text).set_index("split")
    assert frame.loc["train", "n_batches"] == 9 and frame.loc["train", "n_tokens"] == 4608
    assert frame.loc["val", "n_batches"] == 1 and frame.loc["val", "n_tokens"] == 512
    assert frame["loss"].between(5, 20).all()
