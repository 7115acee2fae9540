"""Shared fixtures: small texts and model configs made here, The Verdict when present."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"

TINY_CONFIG = {
    "vocab_size": 50257,
    "context_length": 32,
    "emb_dim": 32,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}


def make_text(n_words: int = 1200, seed: int = 0) -> str:
    """A deterministic English-like text, long enough for a few batches of short windows."""
    rng = random.Random(seed)
    words = (
        "the painter said that every effort moves you toward a picture of his wife and the studio "
        "was quiet when I came back from the Riviera with a sketch of the sea"
    ).split()
    sentences = []
    while sum(len(s.split()) for s in sentences) < n_words:
        sentences.append(" ".join(rng.choice(words) for _ in range(rng.randint(5, 14))).capitalize() + ".")
    return " ".join(sentences)


@pytest.fixture(scope="session")
def small_text() -> str:
    return make_text()


@pytest.fixture
def tiny_config() -> dict:
    return dict(TINY_CONFIG)


@pytest.fixture(scope="session")
def verdict_text() -> str:
    if not VERDICT.is_file():
        pytest.skip(f"The Verdict is not at {VERDICT} (it is kept outside the repository)")
    return VERDICT.read_text(encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def offline_tiktoken(tmp_path_factory):
    """Let code that calls ``tiktoken.get_encoding("gpt2")`` (the book's package) run offline."""
    import os

    from gptlab.tokenizer import seed_tiktoken_cache

    cache = seed_tiktoken_cache(tmp_path_factory.mktemp("tiktoken"))
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = old
