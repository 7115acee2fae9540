"""Decoding: the book's semantics, the KV cache, per-row seed streams, eos and filtering."""

from __future__ import annotations

import pytest
import torch
from llms_from_scratch.ch05 import generate as book_generate

from gptlab.generation import (
    RowSetting,
    apply_top_k,
    apply_top_p,
    check_setting,
    generate,
    generate_rows,
    generate_text_simple,
)
from tests.conftest import make_model

SMALL = {"vocab_size": 97, "context_length": 16}  # fast; prompts here are raw ids
PROMPT = torch.tensor([[11, 42, 7, 3]])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return make_model(**SMALL)


@pytest.fixture(scope="module")
def gpt2_vocab_model():
    return make_model()


def test_book_call_reproduces_book_generate_with_gpt2_vocabulary(gpt2_vocab_model):
    # The book's own call in section 5.3: torch.manual_seed(123), 15 tokens, context 256, T=1.4, top-k 25.
    idx = torch.tensor([[6109, 3626, 6100, 345]])  # "Every effort moves you"
    torch.manual_seed(123)
    expected = book_generate(gpt2_vocab_model, idx, 15, 256, temperature=1.4, top_k=25)
    torch.manual_seed(123)
    got = generate(gpt2_vocab_model, idx, 15, 256, temperature=1.4, top_k=25)
    assert got.tolist() == expected.tolist()
    # and both left the global RNG in the same state (same number of draws)
    torch.manual_seed(123)
    book_generate(gpt2_vocab_model, idx, 15, 256, temperature=1.4, top_k=25)
    after_book = torch.get_rng_state()
    torch.manual_seed(123)
    generate(gpt2_vocab_model, idx, 15, 256, temperature=1.4, top_k=25)
    assert torch.equal(torch.get_rng_state(), after_book)


@pytest.mark.parametrize(
    "temperature,top_k,new", [(1.0, None, 12), (0.7, 3, 12), (2.0, 10, 30), (0.0, None, 30), (0.0, 5, 12)]
)
def test_global_rng_path_matches_book_including_past_the_context(model, temperature, top_k, new):
    # new=30 with a 16-token context forces the sliding window (the cache is refilled).
    ctx = SMALL["context_length"]
    torch.manual_seed(7)
    expected = book_generate(model, PROMPT, new, ctx, temperature=temperature, top_k=top_k)
    torch.manual_seed(7)
    assert generate(model, PROMPT, new, ctx, temperature, top_k).tolist() == expected.tolist()


def test_cached_greedy_equals_uncached_and_generate_text_simple(model):
    ctx = SMALL["context_length"]
    idx = torch.tensor([[11, 42, 7, 3], [5, 6, 90, 1]])
    for new in (5, 40):  # within the context and well past it
        simple = generate_text_simple(model, idx, new, ctx)
        cached = generate(model, idx, new, ctx)
        uncached = generate(model, idx, new, ctx, use_cache=False)
        assert torch.equal(cached, simple)
        assert torch.equal(uncached, simple)
        assert cached.shape == (2, 4 + new)


def test_temperature_zero_or_top_k_one_is_greedy(model):
    ctx = SMALL["context_length"]
    greedy = generate_text_simple(model, PROMPT, 10, ctx)
    assert torch.equal(generate(model, PROMPT, 10, ctx, temperature=0.0, top_k=7), greedy)
    assert torch.equal(generate(model, PROMPT, 10, ctx, temperature=1.5, top_k=1, seeds=[3]), greedy)
    sampled = generate(model, PROMPT, 10, ctx, temperature=1.5, seeds=[3])
    assert not torch.equal(sampled, greedy)


def test_same_seed_gives_same_tokens_at_batch_1_and_4(model):
    ctx = SMALL["context_length"]
    seeds = [5, 6, 7, 8]
    batch = generate(model, PROMPT, 12, ctx, temperature=1.0, top_k=20, seeds=seeds)
    assert batch.shape == (4, 16)
    for i, s in enumerate(seeds):
        single = generate(model, PROMPT, 12, ctx, temperature=1.0, top_k=20, seeds=[s])
        assert torch.equal(single[0], batch[i])
    # the rows are genuinely different samples
    assert len({tuple(r.tolist()) for r in batch}) > 1
    # and the same seeds in another order give the same rows, reordered
    reordered = generate(model, PROMPT, 12, ctx, temperature=1.0, top_k=20, seeds=seeds[::-1])
    assert torch.equal(reordered, batch.flip(0))


def test_seed_stream_equals_manual_seed_and_leaves_global_rng_alone(model):
    ctx = SMALL["context_length"]
    torch.manual_seed(123)
    book = book_generate(model, PROMPT, 10, ctx, temperature=1.3, top_k=30)
    torch.manual_seed(999)
    state = torch.get_rng_state()
    seeded = generate(model, PROMPT, 10, ctx, temperature=1.3, top_k=30, seeds=[123])
    assert torch.equal(torch.get_rng_state(), state)
    assert seeded.tolist() == book.tolist()
    gen = generate(model, PROMPT, 10, ctx, 1.3, 30, generator=torch.Generator().manual_seed(123))
    assert gen.tolist() == book.tolist()


def test_generate_rows_mixed_settings_match_single_rows_and_logprobs(model):
    ctx = SMALL["context_length"]
    settings = [
        RowSetting(1.0, 5, None, 7),
        RowSetting(0.0),
        RowSetting(2.0, None, 0.9, 3),
        RowSetting(0.8, 40, None, 11),
    ]
    out = generate_rows(model, PROMPT, 10, ctx, settings)
    assert out.token_ids.shape == (4, 14) and out.logprobs.shape == (4, 10)
    assert out.num_generated == [10] * 4
    for i, s in enumerate(settings):
        single = generate_rows(model, PROMPT, 10, ctx, [s])
        assert torch.equal(single.token_ids[0], out.token_ids[i])
    assert torch.equal(out.token_ids[1], generate_text_simple(model, PROMPT, 10, ctx)[0])
    # log-probabilities are those of the untempered model, recomputed here by teacher forcing
    with torch.no_grad():
        full = torch.log_softmax(model(out.token_ids[:, :-1]), dim=-1)
    expected = full[:, 3:].gather(2, out.token_ids[:, 4:, None])[..., 0]
    torch.testing.assert_close(out.logprobs, expected, atol=1e-4, rtol=0)


def _first_new_token_unique_to_row0(rows, start):
    for t in rows[0, start:].tolist():
        if t not in rows[1, start:].tolist():
            return t
    pytest.skip("no generated token of row 0 is absent from row 1 for this random model")


def test_eos_pads_finished_rows_and_stops_batch_of_one(model):
    ctx = SMALL["context_length"]
    idx = torch.tensor([[11, 42, 7, 3], [5, 6, 90, 1]])
    free = generate(model, idx, 10, ctx)
    eos = _first_new_token_unique_to_row0(free, 4)
    pos = free[0, 4:].tolist().index(eos)
    out = generate(model, idx, 10, ctx, eos_id=eos)
    assert out[0, 4 : 4 + pos].tolist() == free[0, 4 : 4 + pos].tolist()
    assert (out[0, 4 + pos :] == eos).all()
    assert torch.equal(out[1], free[1])  # the other row is untouched
    single = generate(model, idx[:1], 10, ctx, eos_id=eos)  # the book: stop, eos not appended
    assert single[0].tolist() == free[0, : 4 + pos].tolist()
    rows = generate_rows(model, idx, 10, ctx, [RowSetting(), RowSetting()], eos_id=eos)
    assert rows.num_generated == [pos, 10]
    assert torch.isnan(rows.logprobs[0, pos + 1 :]).all() and not torch.isnan(rows.logprobs[1]).any()


def test_top_k_keeps_ties_at_the_kth_logit_per_row():
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    out = apply_top_k(logits, 2)
    assert torch.isfinite(out[0]).tolist() == [False, True, True, True, False]  # tie at 2.0 kept
    assert torch.isfinite(out[1]).tolist() == [True, True, False, False, False]  # per-row threshold


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(apply_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(apply_top_p(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(apply_top_p(logits, 0.81)).tolist() == [[True, True, True, False]]


def test_bad_arguments_are_named(model):
    ctx = SMALL["context_length"]
    with pytest.raises(ValueError, match="4 rows"):
        generate(model, PROMPT.expand(4, -1), 3, ctx, 1.0, seeds=[1, 2])
    with pytest.raises(ValueError, match="not both"):
        generate(model, PROMPT, 3, ctx, 1.0, seeds=[1], generator=torch.Generator())
    with pytest.raises(ValueError, match="temperature=-1"):
        generate(model, PROMPT, 3, ctx, -1)
    with pytest.raises(ValueError, match="top_k=0"):
        generate_rows(model, PROMPT, 3, ctx, [RowSetting(1.0, 0, None, 1)])
    with pytest.raises(ValueError, match="seed='1'"):
        generate(model, PROMPT, 3, ctx, 1.0, seeds=["1"])
    with pytest.raises(ValueError, match="max_new_tokens=-2"):
        generate(model, PROMPT, -2, ctx)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"top_k": 2.5}, "top_k=2.5 must be a positive integer"),
        ({"top_k": True}, "top_k=True"),
        ({"top_p": 0.0}, r"top_p=0.0 must be in \(0, 1\]"),
        ({"seed": 1.0}, "seed=1.0 must be an int"),
    ],
)
def test_settings_are_checked_in_one_place_before_decoding(model, setting, message):
    with pytest.raises(ValueError, match=message):
        check_setting(**setting)
    with pytest.raises(ValueError, match=message):
        generate_rows(model, PROMPT, 0, 8, [RowSetting(**setting)])  # checked before any token
    seed = setting.pop("seed", None)
    with pytest.raises(ValueError, match=message):
        generate(model, PROMPT, 0, 8, seeds=None if seed is None else [seed], **setting)
    assert check_setting(0.5, 3, 0.9, 7) == RowSetting(0.5, 3, 0.9, 7)
