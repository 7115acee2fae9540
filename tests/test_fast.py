"""Fast mode: the same model and training, computed with fused kernels.

Exact mode must stay the book's bit for bit; fast mode must compute the same
functions (up to rounding) with the same parameters, dropout and cache semantics.
Side-by-side comparisons with the book's package are in ``test_conformance.py``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from gptlab import fast
from gptlab.generation import generate
from gptlab.losses import calc_loss_loader
from gptlab.model import GPTModel, KVCache, MultiHeadAttention


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models gain nothing from threads, and on a busy machine thread
    # synchronisation makes them many times slower.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pair(cfg, seed=123):
    """An exact-mode and a fast-mode model with identical weights."""
    torch.manual_seed(seed)
    exact = GPTModel(cfg)
    torch.manual_seed(seed)
    quick = GPTModel(cfg).set_fast()
    return exact, quick


def test_fast_mode_keeps_parameters_state_dict_and_initialisation(tiny_config):
    exact, quick = pair(tiny_config)
    assert quick.is_fast and not exact.is_fast
    a, b = exact.state_dict(), quick.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Switching back restores the book's computation exactly.
    idx = torch.randint(0, 1000, (2, 20))
    quick.set_fast(False).eval(), exact.eval()
    assert not quick.is_fast
    assert torch.equal(quick(idx), exact(idx))


def test_logits_match_the_exact_mode_in_float32(tiny_config):
    exact, quick = pair(tiny_config)
    exact.eval(), quick.eval()
    idx = torch.randint(0, tiny_config["vocab_size"], (3, tiny_config["context_length"]))
    with torch.no_grad():
        ref, got = exact(idx), quick(idx)
    assert not torch.equal(ref, got)  # really a different computation ...
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)  # ... of the same function


def test_gradients_match_without_dropout(tiny_config):
    cfg = dict(tiny_config, drop_rate=0.0, vocab_size=1000)
    exact, quick = pair(cfg)
    idx = torch.randint(0, 1000, (2, 24))
    target = torch.randint(0, 1000, (2, 24))
    for model in (exact, quick):
        torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), target.flatten()).backward()
    for (name, p), q in zip(exact.named_parameters(), quick.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("fast_mode", [False, True])
def test_dropout_is_on_the_attention_weights_with_inverted_scaling(fast_mode):
    # E[dropout(weights)] = weights: the average over many training passes is
    # the eval output, and single passes differ from it.
    torch.manual_seed(0)
    att = MultiHeadAttention(8, 8, context_length=6, dropout=0.5, num_heads=2)
    att.fast = fast_mode
    x = torch.randn(1, 6, 8).expand(4000, -1, -1)  # every row draws its own dropout mask
    with torch.no_grad():
        expected = att.eval()(x[:1])[0]
        samples = att.train()(x)
    assert not torch.allclose(samples[0], expected, atol=1e-3)
    # out_proj is affine, so the mean passes through it.
    torch.testing.assert_close(samples.mean(0), expected, rtol=0, atol=0.03)


def test_kv_cache_in_fast_mode_matches_full_forward(tiny_config):
    _, quick = pair(tiny_config)
    quick.eval()
    idx = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        full = quick(idx)
        cache = KVCache(quick.cfg, batch_size=2, max_len=16)
        prefill = quick(idx[:, :6], cache=cache)  # empty cache: causal mask
        one = quick(idx[:, 6:7], cache=cache)  # one token: no mask
        several = quick(idx[:, 7:16], cache=cache)  # several tokens after the cache: explicit mask
    got = torch.cat([prefill, one, several], dim=1)
    torch.testing.assert_close(got, full, rtol=0, atol=1e-5)
    assert cache.pos == 16


def test_generate_in_fast_mode_gives_the_exact_modes_tokens(tiny_config):
    exact, quick = pair(tiny_config)
    exact.eval(), quick.eval()
    idx = torch.randint(0, 1000, (2, 5))
    want = generate(exact, idx, 20, tiny_config["context_length"])
    assert torch.equal(generate(quick, idx, 20, tiny_config["context_length"]), want)
    # Beyond the context window the cache is refilled (a prefill after a cache hit).
    long_run = generate(quick, idx, 40, tiny_config["context_length"])
    assert long_run.shape == (2, 45)
    assert torch.equal(long_run, generate(exact, idx, 40, tiny_config["context_length"], use_cache=False))


def test_fused_adamw_takes_the_books_adamw_step(tiny_config):
    exact, quick = pair(dict(tiny_config, vocab_size=1000))
    ref_opt = torch.optim.AdamW(exact.parameters(), lr=4e-4, weight_decay=0.1)
    opt = fast.make_adamw(quick.parameters(), lr=4e-4, weight_decay=0.1)
    assert opt.param_groups[0]["fused"] or opt.param_groups[0]["foreach"]
    quick.set_fast(False)  # same forward, so only the optimizer differs
    before = [p.detach().clone() for p in exact.parameters()]
    idx = torch.randint(0, 1000, (2, 16))
    for _ in range(3):
        for model, optimizer in ((exact, ref_opt), (quick, opt)):
            torch.manual_seed(1)
            optimizer.zero_grad()
            model(idx).pow(2).mean().backward()
            optimizer.step()
    # Three steps move weights by about 3 * lr; the implementations agree to a tiny fraction of that.
    assert max((p - b).abs().max().item() for p, b in zip(exact.parameters(), before, strict=True)) > 1e-3
    for (name, p), q in zip(exact.named_parameters(), quick.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=2e-6, msg=name)


def test_fast_training_loss_decreases(tiny_config):
    torch.manual_seed(123)
    cfg = dict(tiny_config, vocab_size=500)
    model, optimizer, autocast = fast.fast_training(GPTModel(cfg), dict(lr=5e-3, weight_decay=0.1))
    assert model.is_fast
    x = torch.randint(0, 500, (4, 16))
    y = torch.roll(x, -1, dims=1)
    losses = [fast.train_step(model, optimizer, x, y, "cpu", autocast).item() for _ in range(15)]
    assert losses[-1] < losses[0] - 2.0


def test_fast_evaluation_matches_the_books_loss(tiny_config):
    exact, quick = pair(tiny_config)
    data = [(torch.randint(0, 1000, (2, 16)), torch.randint(0, 1000, (2, 16))) for _ in range(4)]
    exact.eval()
    with torch.no_grad():
        want = calc_loss_loader(data, exact, "cpu", num_batches=3)
    quick.train()
    train_loss, val_loss = fast.evaluate_model(quick, data, data[:1], "cpu", eval_iter=3)
    assert quick.training  # back in training mode afterwards
    assert train_loss == pytest.approx(want, abs=1e-5)
    assert val_loss == pytest.approx(calc_loss_loader(data[:1], exact, "cpu"), abs=1e-5)
    assert fast.calc_loss_loader([], quick, "cpu") != fast.calc_loss_loader([], quick, "cpu")  # NaN


def test_bf16_autocast_forward_is_close(tiny_config):
    # bf16 rounds every matmul input to 8 bits of mantissa: close, not equal.
    exact, quick = pair(tiny_config)
    exact.eval(), quick.eval()
    idx = torch.randint(0, 1000, (2, 16))
    with torch.no_grad():
        ref = exact(idx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = quick(idx)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=0.05, atol=0.05)


def test_autocast_is_chosen_by_hardware():
    ctx = fast.autocast_context("cpu", bf16=False)
    assert ctx is contextlib.nullcontext
    if fast.cpu_has_native_bf16():
        with fast.autocast_context("cpu")():
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    else:
        assert fast.autocast_context("cpu") is contextlib.nullcontext
        with pytest.raises(ValueError, match="no native bf16 support.*bf16=None"):
            fast.autocast_context("cpu", bf16=True)


def test_fast_training_rejects_other_models():
    with pytest.raises(TypeError, match="needs a gptlab GPTModel, got Linear"):
        fast.fast_training(torch.nn.Linear(2, 2), dict(lr=1e-3, weight_decay=0.0))


def test_joined_evaluation_keeps_the_books_per_batch_average(tiny_config):
    # A short last batch (the validation loader keeps it) weighs as one batch, as in the book.
    exact, quick = pair(tiny_config)
    exact.eval(), quick.eval()
    sizes = (2, 2, 2, 1)
    data = [(torch.randint(0, 1000, (n, 16)), torch.randint(0, 1000, (n, 16))) for n in sizes]
    with torch.no_grad():
        want = calc_loss_loader(data, exact, "cpu")
    for max_tokens in (16, 48, 10_000):  # one batch per pass, some joined, all joined
        assert fast.calc_loss_loader(data, quick, "cpu", max_tokens=max_tokens) == pytest.approx(
            want, abs=1e-5
        )


def test_study_passes_the_fast_switch_to_training(tmp_path, tiny_config, small_text):
    from gptlab.study.runs import run_pretraining
    from gptlab.training.checkpoint import load_checkpoint
    from gptlab.training.config import TrainConfig

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(small_text)
    config = TrainConfig(num_epochs=1, max_length=16, eval_freq=50, eval_iter=1)
    for mode in (False, True):
        ckpt = tmp_path / f"{mode}.pt"
        outputs = (ckpt, tmp_path / f"{mode}.tsv", tmp_path / f"{mode}_samples.tsv")
        run_pretraining(
            corpus,
            *outputs,
            model_config=tiny_config,
            config=config.replace(fast=mode),
            device="cpu",
            threads=1,
        )
        saved = load_checkpoint(ckpt)
        assert saved["train_config"]["fast"] is mode
        assert bool(saved["optimizer_state_dict"]["param_groups"][0]["fused"]) is mode


def test_chunked_cross_entropy_matches_the_float32_loss_and_gradient():
    torch.manual_seed(0)
    rows = 2 * fast.LOSS_CHUNK_ROWS + 5  # a short last chunk
    logits = (3 * torch.randn(rows, 300)).bfloat16().requires_grad_()
    targets = torch.randint(0, 300, (rows,))
    want = torch.nn.functional.cross_entropy(logits.float(), targets)
    (want_grad,) = torch.autograd.grad(want, logits)
    got = fast._ChunkedCrossEntropy.apply(logits, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    (3 * got).backward()  # an upstream gradient other than 1 scales it
    assert logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad.float(), 3 * want_grad.float(), rtol=0.01, atol=1e-6)


def test_fast_loss_is_the_books_computed_in_chunks_on_the_cpu(tiny_config):
    from gptlab.losses import calc_loss_batch

    exact, quick = pair(tiny_config)
    x, y = torch.randint(0, 1000, (3, 30)), torch.randint(0, 1000, (3, 30))  # 90 rows: 3 chunks
    exact.eval(), quick.eval()
    want = calc_loss_batch(x, y, exact, "cpu")
    (want_grad,) = torch.autograd.grad(want, exact.out_head.weight)
    got = fast.calc_loss_batch(x, y, quick, "cpu")
    assert type(got.grad_fn).__name__ == "_ChunkedCrossEntropyBackward"  # really chunked
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    (got_grad,) = torch.autograd.grad(got, quick.out_head.weight)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # emulated where not native: slow, still correct
        low = fast.calc_loss_batch(x, y, quick, "cpu")
    assert type(low.grad_fn).__name__ == "_ChunkedCrossEntropyBackward" and low.dtype == torch.float32
    torch.testing.assert_close(low, want, rtol=0, atol=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_losses_match_cross_entropy(dtype):
    logits = torch.randn(fast.LOSS_CHUNK_ROWS + 3, 50).to(dtype)
    targets = torch.randint(0, 50, (len(logits),))
    want = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    torch.testing.assert_close(fast.token_losses(logits, targets), want, rtol=0, atol=1e-5)


def test_fast_dropout_attention_is_the_books_and_draws_as_the_book_does():
    """Training on the CPU, fast attention with dropout computes the book's and draws its masks."""
    from gptlab.model import MultiHeadAttention

    torch.manual_seed(0)
    book = MultiHeadAttention(24, 24, context_length=16, dropout=0.1, num_heads=3)
    quick = MultiHeadAttention(24, 24, context_length=16, dropout=0.1, num_heads=3)
    quick.load_state_dict(book.state_dict())
    quick.fast = True
    x = torch.randn(2, 16, 24)
    torch.manual_seed(1)
    want = book(x)
    book_state = torch.get_rng_state()
    torch.manual_seed(1)
    got = quick(x)
    # The same mask, on the weights: the same output; the same draws: the data order, drawn from
    # the same generator later, stays the book's.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(torch.get_rng_state(), book_state)
    assert not torch.allclose(got, quick.eval()(x), atol=1e-3)  # dropout did act
    quick.train()
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = quick(x)
    assert low.dtype == torch.bfloat16 and torch.equal(torch.get_rng_state(), book_state)
    torch.testing.assert_close(low.float(), want, rtol=0, atol=0.1)


def test_kept_memory_is_reused_without_page_faults(monkeypatch, tiny_config):
    resource = pytest.importorskip("resource")
    if not fast.keep_freed_memory():
        pytest.skip("no glibc malloc here")

    def faults_of(n_floats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(n_floats).sum()  # written, then freed
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of(18 * 2**20)  # 72 MB: the heap grows, and keeps the space when it is freed
    assert faults_of(16 * 2**20) < 1000  # 64 MB in it: 16,384 fresh pages if mapped afresh
    calls = []
    monkeypatch.setattr(fast, "keep_freed_memory", lambda: calls.append(1))
    fast.fast_training(GPTModel(tiny_config), dict(lr=1e-3, weight_decay=0.0))
    fast.fast_training(GPTModel(tiny_config), dict(lr=1e-3, weight_decay=0.0), keep_memory=False)
    assert calls == [1]
