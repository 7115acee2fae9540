"""Shared fixtures: small texts and model configs made here, The Verdict when present."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from gptlab.model import GPTModel

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


# Small enough for fast decoding tests, with the GPT-2 vocabulary so real prompts tokenize.
EXPERIMENT_CONFIG = {**TINY_CONFIG, "context_length": 64, "n_heads": 2}


def make_model(seed: int | None = 123, **overrides) -> GPTModel:
    """An ``EXPERIMENT_CONFIG`` model (with ``overrides``) in eval mode; ``seed=None`` continues the RNG."""
    if seed is not None:
        torch.manual_seed(seed)
    return GPTModel({**EXPERIMENT_CONFIG, **overrides}).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are fastest on one thread (and immune to busy neighbours on a shared machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The whole DAG on the tiny offline config, run once locally: ``(workdir, config, result)``.

    Shared by the pipeline tests and the SLURM tests (which compare their artifacts with it).
    """
    from tests.workflow_helpers import prepare_tiny_study, snakemake

    workdir = tmp_path_factory.mktemp("study")
    config = prepare_tiny_study(workdir)
    result = snakemake(workdir, "--cores", "2", "--configfile", str(config), timeout=1500)
    assert result.returncode == 0, result.stderr[-6000:]
    return workdir, config, result


@pytest.fixture(scope="session")
def runs_study(tmp_path_factory):
    """The tiny training study (6 runs) with 6 cores, run once locally: ``(workdir, config, result)``.

    Shared by the training-study tests and the SLURM tests (which compare their results with it).
    """
    from tests.workflow_helpers import TINY_RUNS, prepare_tiny_study, snakemake

    workdir = tmp_path_factory.mktemp("runs-parallel")
    config = prepare_tiny_study(workdir, runs=TINY_RUNS)
    result = snakemake(workdir, "--configfile", str(config), "--cores", "6", "training_study", timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return workdir, config, result


@pytest.fixture
def full_disk(tmp_path):
    """``make(size_bytes)`` → a folder on its own tmpfs of that size: a disk that fills up for real.

    Needs the right to mount (root in CI); skipped with the reason otherwise.
    """
    import subprocess

    mounts = []

    def make(size_bytes: int):
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up ({done.stderr.strip()})")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
