"""Exercise 5.1 (pizza), the per-text metrics, and where models' weights come from."""
# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import json
import math
import random
import shutil
from importlib import metadata

import pandas as pd
import pytest
import torch

from gptlab.experiments import metrics, pizza
from gptlab.experiments.common import (
    CHECKPOINT,
    GPT2_RELEASE,
    IN_MEMORY,
    describe_models,
    load_model,
    model_origin,
)
from gptlab.generation import TOY_INVERSE_VOCAB, print_sampled_tokens, softmax_with_temperature
from gptlab.gpt2 import DATA, GPT2_HPARAMS, SAFETENSORS, gpt2_model_config, release_origin
from gptlab.io import write_table
from gptlab.model import GPTModel
from gptlab.tokenizer import get_tokenizer
from tests.conftest import make_model
from tests.gpt2_fixtures import TINY, converted, synthetic_ckpt  # noqa: F401  (fixtures)

BOOK_T1_COUNTS = [73, 0, 0, 582, 2, 0, 0, 343, 0]  # closer every effort forward inches moves pizza toward you


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- metrics


def test_distinct_and_repetition_on_hand_made_sequences():
    assert metrics.distinct_n([1, 2, 1, 2], 1) == 0.5
    assert metrics.distinct_n([1, 2, 1, 2], 2) == pytest.approx(2 / 3)  # (1,2) (2,1) (1,2)
    assert metrics.distinct_n("a b c".split(), 2) == 1.0
    assert math.isnan(metrics.distinct_n([1], 2))
    loop = "a b c d a b c d".split()  # 4-grams: abcd bcda cdab dabc abcd -> 1 of 5 repeats
    assert metrics.repetition_rate(loop) == pytest.approx(0.2)
    assert metrics.repetition_rate(list(range(10))) == 0.0
    assert metrics.repetition_rate([7] * 10) == pytest.approx(6 / 7)
    assert math.isnan(metrics.repetition_rate([1, 2, 3]))


def test_mean_logprob_ignores_padding():
    assert metrics.mean_logprob([-1.0, -3.0, float("nan")]) == -2.0
    assert math.isnan(metrics.mean_logprob([]))


def test_verbatim_index_on_words():
    train = "the cat sat on the mat and the dog sat on the cat".split()
    index = metrics.VerbatimIndex(train)
    assert index.longest_match("a dog sat on the mat today".split()) == (4, 1)  # "dog sat on the"
    assert index.longest_match("sat on the cat".split()) == (4, 0)
    assert index.longest_match("zebra".split()) == (0, 0)
    assert index.longest_match([]) == (0, 0)


def _brute_longest(train, query):
    best = 0
    for i in range(len(query)):
        for j in range(i + 1, len(query) + 1):
            q = query[i:j]
            if any(train[s : s + len(q)] == q for s in range(len(train) - len(q) + 1)):
                best = max(best, j - i)
    return best


def test_verbatim_index_agrees_with_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        train = [rng.randrange(4) for _ in range(rng.randrange(1, 40))]
        query = [rng.randrange(4) for _ in range(rng.randrange(0, 15))]
        length, start = metrics.VerbatimIndex(train).longest_match(query)
        assert length == _brute_longest(train, query)
        span = query[start : start + length]
        assert any(train[s : s + length] == span for s in range(len(train) - length + 1))


def test_text_metrics_bundle():
    m = metrics.text_metrics([1, 2, 3, 1, 2], [-1.0] * 5, metrics.VerbatimIndex([0, 2, 3, 1, 9]))
    assert m["num_generated"] == 5 and m["distinct_1"] == 0.6 and m["mean_logprob"] == -1.0
    assert (m["verbatim_span"], m["verbatim_start"]) == (3, 1)
    assert math.isnan(metrics.text_metrics([1, 2])["verbatim_span"])


# ---------------------------------------------------------------- 5.1 pizza


def test_print_sampled_tokens_reproduces_the_books_counts(capsys):
    logits = pizza.toy_logits()
    counts = {t: int(print_sampled_tokens(softmax_with_temperature(logits, t))[6]) for t in (1, 0.1, 5)}
    assert counts == {1: 0, 0.1: 0, 5: 32}
    assert "0 x pizza" in capsys.readouterr().out
    assert print_sampled_tokens(softmax_with_temperature(logits, 1)).tolist() == BOOK_T1_COUNTS


def test_exact_probability_of_pizza():
    assert round(float(pizza.exact_probabilities(pizza.toy_logits(), 5)[pizza.PIZZA_ID]), 4) == 0.0430
    p01 = float(pizza.exact_probabilities(pizza.toy_logits(), 0.1)[pizza.PIZZA_ID])
    assert p01 < 1e-30  # why 0.1 never yields pizza
    greedy = pizza.exact_probabilities(pizza.toy_logits(), 0)
    assert greedy.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0]  # "forward"


@pytest.mark.parametrize("temperature", [1, 0.1, 5, 2.5])
def test_vectorised_sampling_reproduces_the_loop_draw_for_draw(temperature):
    probas = softmax_with_temperature(pizza.toy_logits(), temperature)
    loop = pizza.sample_counts(probas, 1000, 123, "loop")
    assert torch.equal(pizza.sample_counts(probas, 1000, 123, "vectorised"), loop)
    assert int(loop.sum()) == 1000


def test_book_reproduction_table():
    df = pizza.book_reproduction()
    assert list(df.columns) == pizza.BOOK_COLUMNS
    assert len(df) == 3 * len(TOY_INVERSE_VOCAB)
    rows = df[df["token"] == "pizza"].set_index("temperature")
    assert rows["count_book_loop"].to_dict() == {1.0: 0, 0.1: 0, 5.0: 32}
    assert (rows["count_vectorised"] == rows["count_book_loop"]).all()
    assert rows.loc[5.0, "expected_count"] == pytest.approx(43.0, abs=0.05)
    assert rows.loc[5.0, "ci_low"] < 0.032 < rows.loc[5.0, "ci_high"]
    assert bool(rows.loc[5.0, "in_ci"])  # 32 is compatible with p = 0.0430
    for _, g in df.groupby("temperature"):
        assert g["count_book_loop"].sum() == 1000 and g["exact_prob"].sum() == pytest.approx(1.0)


def test_binomial_intervals_known_values():
    # R: binom.test(32, 1000)$conf.int = 0.02198885 0.04487590
    assert pizza.clopper_pearson_interval(32, 1000) == pytest.approx((0.02198885, 0.04487590), abs=1e-7)
    assert pizza.wilson_interval(32, 1000) == pytest.approx((0.0227571, 0.0448247), abs=1e-6)
    # closed forms at the edges: k = 0 -> upper = 1 - (alpha/2)^(1/n); k = n -> lower = (alpha/2)^(1/n)
    assert pizza.clopper_pearson_interval(0, 1000) == pytest.approx((0.0, 1 - 0.025 ** (1 / 1000)))
    assert pizza.clopper_pearson_interval(20, 20)[0] == pytest.approx(0.025 ** (1 / 20))
    assert pizza.wilson_interval(0, 50)[0] == 0.0 and pizza.wilson_interval(50, 50)[1] == 1.0
    with pytest.raises(ValueError, match="k=5, n=3"):
        pizza.wilson_interval(5, 3)
    with pytest.raises(ValueError, match="confidence=1.5"):
        pizza.clopper_pearson_interval(1, 3, 1.5)
    with pytest.raises(ValueError, match="interval='bayes'"):
        pizza.book_reproduction(interval="bayes")


def test_temperature_sweep_exact_vs_empirical():
    df = pizza.temperature_sweep(interval="clopper-pearson")
    assert list(df.columns) == pizza.SWEEP_COLUMNS
    temps = sorted(df["temperature"].unique())
    assert temps[0] == pytest.approx(0.05) and temps[-1] == pytest.approx(10.0) and len(temps) >= 50
    assert {0.1, 1.0, 5.0} <= set(temps)
    p = df[df["token"] == "pizza"].set_index("temperature")
    assert p.loc[5.0, "count"] == 32  # the same seed at every temperature: the book's draw
    assert p["exact_prob"].is_monotonic_increasing  # pizza is a low-logit token: T flattens towards it
    assert df.groupby("temperature")["count"].sum().eq(1000).all()
    assert df["in_ci"].mean() > 0.85  # nominal 95 % intervals cover the exact value most of the time


@pytest.fixture(scope="module")
def gpt2_vocab_model():
    return make_model()


def test_next_token_probability_of_pizza_under_a_model(gpt2_vocab_model):
    tok = get_tokenizer()
    df = pizza.next_token_probabilities(
        {"tiny": gpt2_vocab_model}, tok, ["I ate a", "Every effort moves you"], [0.5, 1.0, 2.0]
    )
    assert list(df.columns) == pizza.NEXT_TOKEN_COLUMNS and len(df) == 6
    assert (df["target_id"] == 14256).all()
    with torch.no_grad():
        logits = gpt2_vocab_model(torch.tensor([tok.encode("I ate a")]))[0, -1]
    row = df[(df["prompt"] == "I ate a") & (df["temperature"] == 2.0)].iloc[0]
    assert row["prob"] == pytest.approx(float(torch.softmax(logits / 2.0, -1)[14256]), rel=1e-5)
    assert row["rank"] == int((logits.argsort(descending=True) == 14256).nonzero()) + 1
    with pytest.raises(ValueError, match="' pizzeria' is 2 tokens"):
        pizza.next_token_probabilities({"tiny": gpt2_vocab_model}, tok, ["x"], [1.0], target=" pizzeria")


def test_writers_write_csv_and_sidecar(tmp_path, gpt2_vocab_model):
    book = pizza.write_pizza_book(tmp_path / "book.csv")
    sweep = pizza.write_pizza_sweep(tmp_path / "sweep.csv", temperatures=[0.5, 5.0], num_draws=200, seed=7)
    nxt = pizza.write_next_token_probabilities(
        tmp_path / "next.csv", {"tiny": gpt2_vocab_model}, get_tokenizer(), ["I ate a"], [1.0]
    )
    for name, df in [("book", book), ("sweep", sweep), ("next", nxt)]:
        back = pd.read_csv(tmp_path / f"{name}.csv")
        assert list(back.columns) == list(df.columns) and len(back) == len(df)
        meta = json.loads((tmp_path / f"{name}.meta.json").read_text())
        assert meta["versions"]["torch"] == metadata.version("torch")
        assert meta["rows"] == len(df)
    assert json.loads((tmp_path / "sweep.meta.json").read_text())["seed"] == 7
    assert "tiny" in json.loads((tmp_path / "next.meta.json").read_text())["models"]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


# ---------------------------------------------------------------- where the weights come from


def _release(converted, tmp_path, size: str):
    """The converted synthetic release in a folder named after ``size``, as the pipeline keeps it."""
    folder = tmp_path / size
    folder.mkdir()
    shutil.copy2(converted, folder / SAFETENSORS)
    return folder


def test_a_synthetic_release_is_not_openais(converted, tmp_path):
    folder = _release(converted, tmp_path, "124M")
    origin = release_origin(folder, "124M")
    assert origin["matches_openai"] is False and origin["release"] == "124M"
    assert origin["evidence"] == (
        "not OpenAI's weights: its hparams differ from OpenAI's 124M "
        f"(n_layer {TINY['n_layer']} vs 12, n_head {TINY['n_head']} vs 12, n_embd {TINY['n_embd']} vs 768, "
        f"n_ctx {TINY['n_ctx']} vs 1024)"
    )
    anywhere = release_origin(folder / SAFETENSORS)  # no size named: compared with every release
    assert anywhere["release"] is None and "are those of none of OpenAI's releases" in anywhere["evidence"]
    # the pipeline's layer: a model loaded from the folder carries the origin into every sidecar
    model = load_model(folder)
    described = describe_models({"gpt2-124M": model})["gpt2-124M"]
    assert described["origin"] == {"source": GPT2_RELEASE, **origin} == model_origin(folder)


def test_a_release_of_openais_shape_and_size_is_only_consistent(converted, tmp_path, monkeypatch):
    """What the check can tell: hparams and data size. Same shape and size read "consistent", not "OpenAI's";
    a data size other than OpenAI's file's is enough to say not OpenAI's."""
    import gptlab.gpt2.load as load

    folder = _release(converted, tmp_path, "124M")
    monkeypatch.setitem(load.GPT2_HPARAMS, "124M", dict(TINY))  # pretend OpenAI's 124M had this shape
    monkeypatch.setitem(load.KNOWN_FILE_SIZES, "124M", {})  # so its data size is 4 bytes per value
    origin = release_origin(folder)
    assert origin["matches_openai"] is True and origin["release"] == "124M"
    assert origin["evidence"].startswith("consistent with OpenAI's 124M: the same hparams and ")
    assert "the values themselves are not checked" in origin["evidence"]
    monkeypatch.setitem(load.KNOWN_FILE_SIZES, "124M", {DATA: 497759232})
    origin = release_origin(folder)
    assert origin["matches_openai"] is False and "497,759,232 bytes of tensor data" in origin["evidence"]


def test_origin_of_checkpoints_and_models_in_memory(tmp_path):
    assert model_origin(tmp_path / "checkpoint.pt") == {
        "source": CHECKPOINT,
        "matches_openai": False,
        "release": None,
        "evidence": "trained with gptlab (a training checkpoint), not OpenAI's GPT-2",
    }
    tiny = model_origin(make_model())
    assert tiny["source"] == IN_MEMORY and tiny["matches_openai"] is False
    with torch.device("meta"):
        shaped = GPTModel(gpt2_model_config(GPT2_HPARAMS["124M"]))
    unknown = model_origin(shaped)  # OpenAI's shape, weights of unknown source
    assert unknown["matches_openai"] is None and unknown["release"] == "124M"


def test_a_stacked_table_describes_the_models_and_experiment_of_its_parts(tmp_path):
    """Per-model tables record their models; the stacked one is read through its parts."""
    from gptlab.io import concat_tables
    from gptlab.study.notebook import models_of, provenance

    ckpt = tmp_path / "b.pt"
    ckpt.touch()
    one = write_table(
        pd.DataFrame({"model": ["a"]}),
        tmp_path / "a.csv",
        {"experiment": "e", "models": {"a": {"parameters": 1}}},
    )
    two = write_table(
        pd.DataFrame({"model": ["b"]}),
        tmp_path / "b.csv",
        {"experiment": "e", "models": {"b": {"origin": model_origin(ckpt)}}},
    )
    stacked = concat_tables([one, two], tmp_path / "all.csv")
    models = models_of(stacked)
    assert models["a"] == {"parameters": 1} and models["b"]["origin"]["source"] == CHECKPOINT
    assert provenance(stacked).startswith("**`all.csv`**: e; 2 rows, stacked from 2 tables")
