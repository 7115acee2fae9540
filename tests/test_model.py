import pytest
import torch

from gptlab.model import GPT_CONFIG_124M, GPTModel, KVCache, count_parameters, validate_config

book_ch04 = pytest.importorskip(
    "llms_from_scratch.ch04", reason="the book's package (llms-from-scratch) is not installed"
)


def test_book_names_and_creation_order(tiny_config):
    names = [n for n, _ in GPTModel(tiny_config).named_parameters()]
    book_names = [n for n, _ in book_ch04.GPTModel(tiny_config).named_parameters()]
    assert names == book_names
    assert "trf_blocks.1.att.W_query.weight" in names
    assert "trf_blocks.0.ff.layers.2.bias" in names
    assert "final_norm.scale" in names and "out_head.weight" in names


def test_same_seed_gives_the_books_initial_weights_and_logits(tiny_config):
    torch.manual_seed(123)
    ours = GPTModel(tiny_config)
    torch.manual_seed(123)
    book = book_ch04.GPTModel(tiny_config)
    for (n, a), (_, b) in zip(ours.state_dict().items(), book.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    idx = torch.randint(0, tiny_config["vocab_size"], (2, 20))
    ours.eval(), book.eval()
    assert torch.equal(ours(idx), book(idx))


def test_dropout_consumes_rng_like_the_book(tiny_config):
    torch.manual_seed(1)
    ours = GPTModel(tiny_config).train()
    book = book_ch04.GPTModel(tiny_config).train()
    book.load_state_dict(ours.state_dict())
    idx = torch.randint(0, 100, (2, 16))
    torch.manual_seed(7)
    a = ours(idx)
    torch.manual_seed(7)
    b = book(idx)
    assert torch.equal(a, b)


def test_124m_parameter_count():
    with torch.device("meta"):
        model = GPTModel(GPT_CONFIG_124M)
    assert count_parameters(model) == 162_419_712  # the book's figure (untied out_head)


def test_kv_cache_matches_full_forward(tiny_config):
    torch.manual_seed(0)
    model = GPTModel(tiny_config).eval()
    idx = torch.randint(0, 1000, (3, 12))
    full = model(idx)
    cache = KVCache(model.cfg, batch_size=3, max_len=tiny_config["context_length"])
    prefix = model(idx[:, :8], cache=cache)
    steps = [model(idx[:, i : i + 1], cache=cache) for i in range(8, 12)]
    torch.testing.assert_close(prefix, full[:, :8], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 8:], rtol=0, atol=1e-5)
    assert cache.pos == 12


def test_too_long_input_is_a_clear_error(tiny_config):
    model = GPTModel(tiny_config)
    with pytest.raises(ValueError, match="exceeds context_length=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n_heads", 5, "divisible by n_heads"),
        ("emb_dim", 0, "emb_dim=0"),
        ("drop_rate", 1.5, "drop_rate"),
        ("context_length", "256", "context_length"),
    ],
)
def test_bad_config_names_the_key(tiny_config, key, value, message):
    with pytest.raises(ValueError, match=message):
        validate_config({**tiny_config, key: value})


def test_missing_key_is_named(tiny_config):
    del tiny_config["qkv_bias"]
    with pytest.raises(ValueError, match="qkv_bias"):
        GPTModel(tiny_config)
