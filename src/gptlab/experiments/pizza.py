"""Exercise 5.1: how often is "pizza" sampled, and what is the better method?

The book draws 1000 tokens from the temperature-scaled toy distribution
(seed 123) and counts "pizza": 0, 0 and 32 times at T = 1, 0.1 and 5. The
better method needs no sampling at all: the probability is
``softmax(logits / T)[pizza]`` (0.0430 at T = 5), the expected count is
``n * p`` and a binomial confidence interval says which counts are plausible.

``sample_counts(method="vectorised")`` draws all samples in one
``torch.multinomial`` call on an ``[n, vocab]`` matrix. It consumes the RNG
exactly as the book's loop does (each one-sample draw uses one exponential
variate per vocabulary entry), so it reproduces the book's counts draw for draw.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import torch

from ..generation import TOY_INVERSE_VOCAB, TOY_NEXT_TOKEN_LOGITS, TOY_VOCAB, softmax_with_temperature
from ..io import write_table
from .common import describe_models
from .stats import bisect

BOOK_TEMPERATURES = (1.0, 0.1, 5.0)
BOOK_PIZZA_COUNTS = {1.0: 0, 0.1: 0, 5.0: 32}
PIZZA_ID = TOY_VOCAB["pizza"]

BOOK_COLUMNS = [
    "temperature",
    "token_id",
    "token",
    "count_book_loop",
    "count_vectorised",
    "exact_prob",
    "expected_count",
    "empirical_prob",
    "ci_low",
    "ci_high",
    "in_ci",
    "num_draws",
    "seed",
]
SWEEP_COLUMNS = [
    "temperature",
    "token_id",
    "token",
    "count",
    "num_draws",
    "empirical_prob",
    "exact_prob",
    "expected_count",
    "ci_low",
    "ci_high",
    "in_ci",
    "seed",
    "interval",
    "confidence",
]
NEXT_TOKEN_COLUMNS = [
    "model",
    "prompt_id",
    "prompt",
    "target",
    "target_id",
    "temperature",
    "prob",
    "logit",
    "rank",
    "vocab_size",
    "top_tokens",
]


def toy_logits() -> torch.Tensor:
    return torch.tensor(TOY_NEXT_TOKEN_LOGITS)


def exact_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)``; ``T = 0`` is greedy (all mass on the argmax)."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0")
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), logits.numel()).to(logits.dtype)
    return softmax_with_temperature(logits, temperature)


def sample_counts(probas, num_draws: int = 1000, seed: int = 123, method: str = "vectorised"):
    """Counts per token of ``num_draws`` draws after ``torch.manual_seed(seed)``.

    ``method="loop"`` is the book's ``print_sampled_tokens`` loop (without the
    printing); ``"vectorised"`` draws them in one call with identical results.
    """
    if num_draws < 1:
        raise ValueError(f"num_draws={num_draws} must be >= 1")
    torch.manual_seed(seed)
    if method == "loop":
        sample = torch.tensor([torch.multinomial(probas, num_samples=1).item() for _ in range(num_draws)])
    elif method == "vectorised":
        sample = torch.multinomial(probas.expand(num_draws, -1).contiguous(), num_samples=1)[:, 0]
    else:
        raise ValueError(f"method={method!r} must be 'loop' or 'vectorised'")
    return torch.bincount(sample, minlength=probas.numel())


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``."""
    _check_binomial(k, n, confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # k = 0 and k = n put the bound exactly at 0 or 1 (rounding would leave it a hair off).
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


@functools.lru_cache(maxsize=8)
def _log_binom_coeffs(n: int) -> np.ndarray:
    """log C(n, i) for i = 0..n."""
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    return log_fact[n] - log_fact - log_fact[::-1]


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1)
    terms = _log_binom_coeffs(n)[: k + 1] + i * math.log(p) + (n - i) * math.log1p(-p)
    m = terms.max()
    return min(1.0, float(math.exp(m) * np.exp(terms - m).sum()))


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval, by inverting the binomial CDF with bisection."""
    _check_binomial(k, n, confidence)
    alpha = 1 - confidence
    lower = 0.0 if k == 0 else bisect(lambda p: alpha / 2 - (1 - _binom_cdf(k - 1, n, p)))
    upper = 1.0 if k == n else bisect(lambda p: _binom_cdf(k, n, p) - alpha / 2)
    return lower, upper


def _check_binomial(k, n, confidence):
    if not (isinstance(n, int) and n >= 1 and 0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n >= 1 integers, got k={k!r}, n={n!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1), e.g. 0.95")


INTERVALS = {"wilson": wilson_interval, "clopper-pearson": clopper_pearson_interval}


def _interval(name):
    if name not in INTERVALS:
        raise ValueError(f"interval={name!r} must be one of {sorted(INTERVALS)}")
    return INTERVALS[name]


def _token_rows(temperature, probas, counts, num_draws, seed, ci, confidence) -> list[dict]:
    """One row per toy token at ``temperature``: its count, the exact probability and the interval."""
    rows = []
    for tid, token in TOY_INVERSE_VOCAB.items():
        k, p = int(counts[tid]), float(probas[tid])
        lo, hi = ci(k, num_draws, confidence)
        rows.append(
            {
                "temperature": float(temperature),
                "token_id": tid,
                "token": token,
                "count": k,
                "num_draws": num_draws,
                "empirical_prob": k / num_draws,
                "exact_prob": p,
                "expected_count": num_draws * p,
                "ci_low": lo,
                "ci_high": hi,
                "in_ci": lo <= p <= hi,
                "seed": seed,
            }
        )
    return rows


def book_reproduction(
    temperatures=BOOK_TEMPERATURES, num_draws=1000, seed=123, confidence=0.95, interval="wilson"
) -> pd.DataFrame:
    """The book's experiment (one row per temperature and token) next to the exact answer."""
    logits, ci = toy_logits(), _interval(interval)
    rows = []
    for t in temperatures:
        probas = exact_probabilities(logits, t)
        loop = sample_counts(probas, num_draws, seed, "loop")
        vec = sample_counts(probas, num_draws, seed, "vectorised")
        rows += [
            {**row, "count_book_loop": row["count"], "count_vectorised": int(vec[row["token_id"]])}
            for row in _token_rows(t, probas, loop, num_draws, seed, ci, confidence)
        ]
    return pd.DataFrame(rows, columns=BOOK_COLUMNS)


def default_sweep_temperatures(n: int = 60) -> list[float]:
    """Log-spaced temperatures from 0.05 to 10 plus the book's three."""
    return sorted({round(float(t), 6) for t in np.geomspace(0.05, 10.0, n)} | set(BOOK_TEMPERATURES))


def temperature_sweep(
    temperatures=None, num_draws=1000, seed=123, confidence=0.95, interval="wilson"
) -> pd.DataFrame:
    """Exact vs empirical probability of every toy token over a fine temperature grid.

    Every temperature reuses ``seed`` (as the book does), so the curves differ
    only through the temperature, not through new random numbers.
    """
    temperatures = default_sweep_temperatures() if temperatures is None else list(temperatures)
    logits, ci = toy_logits(), _interval(interval)
    rows = []
    for t in temperatures:
        probas = exact_probabilities(logits, t)
        counts = sample_counts(probas, num_draws, seed, "vectorised")
        rows += [
            {**row, "interval": interval, "confidence": confidence}
            for row in _token_rows(t, probas, counts, num_draws, seed, ci, confidence)
        ]
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def _single_token(tokenizer, target: str) -> int:
    ids = tokenizer.encode(target)
    if len(ids) != 1:
        raise ValueError(
            f"target {target!r} is {len(ids)} tokens {ids}; pick a string that is one GPT-2 token "
            "(note the leading space, e.g. ' pizza')"
        )
    return ids[0]


@torch.no_grad()
def next_token_probabilities(
    models: dict, tokenizer, prompts, temperatures, target: str = " pizza", top_n: int = 5
) -> pd.DataFrame:
    """Probability (and rank) of ``target`` as the next token after each prompt, per model and temperature.

    The rank (1 = most likely) is that of the untempered logits: temperature
    scaling is monotonic, so it never changes the order, only how sharp the
    distribution is. ``top_tokens`` lists the ``top_n`` most likely next tokens.
    """
    target_id = _single_token(tokenizer, target)
    rows = []
    for name, model in models.items():
        model.eval()
        device = next(model.parameters()).device
        ctx = model.pos_emb.num_embeddings
        for pid, prompt in enumerate(prompts):
            idx = torch.tensor([tokenizer.encode(prompt)[-ctx:]], device=device)
            logits = model(idx)[0, -1].float().cpu()
            if target_id >= logits.numel():
                raise ValueError(f"target id {target_id} is outside model {name!r}'s vocabulary")
            rank = int((logits > logits[target_id]).sum()) + 1
            top = torch.topk(torch.softmax(logits, -1), top_n)
            top_tokens = " | ".join(
                f"{tokenizer.decode([int(i)])!r}:{float(p):.4f}"
                for p, i in zip(top.values, top.indices, strict=True)
            )
            for t in temperatures:
                rows.append(
                    {
                        "model": name,
                        "prompt_id": pid,
                        "prompt": prompt,
                        "target": target,
                        "target_id": target_id,
                        "temperature": float(t),
                        "prob": float(exact_probabilities(logits, t)[target_id]),
                        "logit": float(logits[target_id]),
                        "rank": rank,
                        "vocab_size": logits.numel(),
                        "top_tokens": top_tokens,
                    }
                )
    return pd.DataFrame(rows, columns=NEXT_TOKEN_COLUMNS)


def write_pizza_book(
    path,
    temperatures=BOOK_TEMPERATURES,
    num_draws=1000,
    seed=123,
    confidence=0.95,
    interval="wilson",
    metadata=None,
) -> pd.DataFrame:
    """Write :func:`book_reproduction` as CSV plus ``.meta.json``; returns the table."""
    df = book_reproduction(temperatures, num_draws, seed, confidence, interval)
    config = {
        "temperatures": list(temperatures),
        "num_draws": num_draws,
        "confidence": confidence,
        "interval": interval,
        "logits": list(TOY_NEXT_TOKEN_LOGITS),
    }
    write_table(
        df,
        path,
        {
            "experiment": "5.1 book reproduction",
            "seed": seed,
            "config": config,
            "book_pizza_counts": BOOK_PIZZA_COUNTS,
            **(metadata or {}),
        },
    )
    return df


def write_pizza_sweep(
    path, temperatures=None, num_draws=1000, seed=123, confidence=0.95, interval="wilson", metadata=None
) -> pd.DataFrame:
    """Write :func:`temperature_sweep` as CSV plus ``.meta.json``; returns the table."""
    df = temperature_sweep(temperatures, num_draws, seed, confidence, interval)
    config = {
        "temperatures": sorted(df["temperature"].unique().tolist()),
        "num_draws": num_draws,
        "confidence": confidence,
        "interval": interval,
        "logits": list(TOY_NEXT_TOKEN_LOGITS),
    }
    write_table(
        df, path, {"experiment": "5.1 temperature sweep", "seed": seed, "config": config, **(metadata or {})}
    )
    return df


def write_next_token_probabilities(
    path, models: dict, tokenizer, prompts, temperatures, target=" pizza", top_n=5, metadata=None
) -> pd.DataFrame:
    """Write :func:`next_token_probabilities` as CSV plus ``.meta.json``; returns the table."""
    df = next_token_probabilities(models, tokenizer, prompts, temperatures, target, top_n)
    config = {"prompts": list(prompts), "temperatures": [float(t) for t in temperatures], "target": target}
    write_table(
        df,
        path,
        {
            "experiment": "5.1 next-token probability under real models",
            "config": config,
            "models": describe_models(models),
            **(metadata or {}),
        },
    )
    return df
