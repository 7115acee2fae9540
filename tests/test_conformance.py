"""Conformance with the book's own code (``llms_from_scratch``), side by side in one process.

Identical weights go into ``llms_from_scratch.ch04.GPTModel`` and gptlab's
``GPTModel``. Exact mode must give the book's numbers bit for bit; fast mode
the same numbers up to rounding. Tolerances for fast mode in float32:
``atol=1e-5`` on logits of magnitude ~1, because the fused kernels (attention,
LayerNorm, GELU) sum in a different order, which moves float32 results
(relative precision 6e-8) by ~1e-6 after a few layers; observed differences
are below 2e-6. Under bf16 autocast (8-bit mantissa, relative precision 4e-3)
the tolerance is 0.05.

Elsewhere: ``tests/test_model.py`` (same seed gives the book's initial
weights, logits and dropout draws), ``tests/test_generation.py`` (``generate``
against the book's for many temperature/top-k settings, past the context).
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from gptlab import fast
from gptlab.data import create_book_loaders
from gptlab.generation import generate
from gptlab.losses import evaluate_model
from gptlab.model import GPTModel
from gptlab.tokenizer import get_tokenizer
from gptlab.training.loop import train_model, train_model_simple

book_ch04 = pytest.importorskip(
    "llms_from_scratch.ch04", reason="the book's package (llms-from-scratch) is not installed"
)
book_ch05 = pytest.importorskip("llms_from_scratch.ch05", reason="the book's package is not installed")

FAST_ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def models(cfg, seed=321):
    """The book's model (its own initialisation) and gptlab's exact and fast models with its weights."""
    torch.manual_seed(seed)
    book = book_ch04.GPTModel(cfg)
    exact, quick = GPTModel(cfg), GPTModel(cfg).set_fast()
    exact.load_state_dict(book.state_dict())
    quick.load_state_dict(book.state_dict())
    return book, exact, quick


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train-with-dropout"])
def test_logits_identical_in_exact_mode_and_close_in_fast_mode(tiny_config, training):
    book, exact, quick = models(tiny_config)
    idx = torch.randint(0, tiny_config["vocab_size"], (3, tiny_config["context_length"]))
    out = {}
    for name, model in (("book", book), ("exact", exact), ("fast", quick)):
        model.train(training)
        torch.manual_seed(7)  # the same dropout draws for all three
        out[name] = model(idx).detach()
        out[f"{name}_rng"] = torch.get_rng_state()
    assert torch.equal(out["exact"], out["book"])
    assert not torch.equal(out["fast"], out["book"])  # really computed differently ...
    torch.testing.assert_close(out["fast"], out["book"], rtol=0, atol=FAST_ATOL)  # ... the same function
    # Fast mode draws its dropout masks from the RNG exactly as the book does.
    assert torch.equal(out["fast_rng"], out["book_rng"])


def test_logits_close_under_bf16_autocast(tiny_config):
    if not fast.bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16 (AVX512-BF16/AMX): fast mode computes in float32 here")
    book, _, quick = models(tiny_config)
    book.eval(), quick.eval()
    idx = torch.randint(0, tiny_config["vocab_size"], (2, 24))
    with torch.no_grad():
        ref = book(idx)
        with fast.autocast_context("cpu")():
            got = quick(idx)
    torch.testing.assert_close(got.float(), ref, rtol=0, atol=0.05)


def test_evaluation_matches_the_books(tiny_config, small_text):
    book, exact, quick = models(tiny_config)
    train_loader, val_loader = create_book_loaders(small_text, 0.9, 2, 32, 32, seed=123)
    results = {}
    for name, model, evaluate in (
        ("book", book, book_ch05.evaluate_model),
        ("exact", exact, evaluate_model),
        ("fast", quick, fast.evaluate_model),
    ):
        torch.manual_seed(5)  # the train loader shuffles: the same seed, the same batches
        results[name] = evaluate(model, train_loader, val_loader, "cpu", 3)
        results[f"{name}_rng"] = torch.get_rng_state()
    assert results["exact"] == results["book"]
    assert results["fast"] == pytest.approx(results["book"], abs=FAST_ATOL)
    assert torch.equal(results["fast_rng"], results["book_rng"])  # the loaders were read alike


def _run(label, cfg, text, loop):
    train_loader, val_loader = create_book_loaders(text, 0.9, 2, 32, 32, seed=123)
    torch.manual_seed(123)
    model = book_ch04.GPTModel(cfg) if label == "book" else GPTModel(cfg)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        losses = loop(model, train_loader, val_loader)
    return model, losses, out.getvalue()


def test_training_run_matches_the_books_train_model_simple(tiny_config, small_text):
    """One epoch of the book's loop: exact mode equal in every bit, fast mode equal up to rounding."""
    tokenizer = get_tokenizer()
    args = ("cpu", 1, 4, 2, "Every effort moves you", tokenizer)

    def book_loop(model, train_loader, val_loader):
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        return book_ch05.train_model_simple(model, train_loader, val_loader, optimizer, *args)

    def exact_loop(model, train_loader, val_loader):
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        return train_model_simple(model, train_loader, val_loader, optimizer, *args)

    def fast_loop(model, train_loader, val_loader):
        model, optimizer, autocast = fast.fast_training(model, dict(lr=4e-4, weight_decay=0.1), bf16=False)
        state = train_model(
            model,
            train_loader,
            val_loader,
            optimizer,
            *args,
            progress=False,
            autocast=autocast,
            evaluate=fast.make_evaluator(autocast),
        )
        return state.train_losses, state.val_losses, state.track_tokens_seen

    book, book_losses, book_out = _run("book", tiny_config, small_text, book_loop)
    exact, exact_losses, exact_out = _run("exact", tiny_config, small_text, exact_loop)
    quick, fast_losses, fast_out = _run("fast", tiny_config, small_text, fast_loop)

    assert len(book_losses[0]) >= 3 and book_out.count("Ep 1 (Step") == len(book_losses[0])
    assert exact_losses == book_losses and exact_out == book_out
    for a, b in zip(exact.state_dict().values(), book.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    assert fast_losses[2] == book_losses[2]  # tokens seen: the same batches
    for got, want in zip(fast_losses[:2], book_losses[:2], strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert quick.is_fast
    for a, b in zip(quick.state_dict().values(), book.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_sampling_conformance_with_the_books_generate(tiny_config):
    book, exact, quick = models(tiny_config)
    for model in (book, exact, quick):
        model.eval()
    idx = torch.tensor([[15496, 11, 314, 716]])
    for temperature, top_k in ((1.4, 25), (0.7, None)):
        torch.manual_seed(7)
        want = book_ch05.generate(book, idx, 15, tiny_config["context_length"], temperature, top_k)
        torch.manual_seed(7)
        got = generate(exact, idx, 15, tiny_config["context_length"], temperature=temperature, top_k=top_k)
        assert torch.equal(got, want), (temperature, top_k)
    # Greedy decoding in fast mode (KV cache and fused attention) picks the book's tokens too.
    greedy = book_ch05.generate(book, idx, 40, tiny_config["context_length"])
    assert torch.equal(generate(quick, idx, 40, tiny_config["context_length"]), greedy)
