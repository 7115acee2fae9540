"""Metrics of one generated text: diversity, repetition, likelihood and memorisation.

All functions take token sequences (lists of GPT-2 token ids, or any hashable
items such as words), so they are independent of the tokenizer:

- ``distinct_n``: unique n-grams / all n-grams (Li et al., 2016); 1.0 = no n-gram repeats.
- ``repetition_rate``: share of n-grams (default 4-grams) that repeat an earlier
  one in the same text ("seq-rep-4", Welleck et al., 2019); catches the loops
  that greedy decoding falls into.
- ``mean_logprob``: mean log-probability of the generated tokens under the
  untempered model (from :func:`gptlab.generation.generate_rows`).
- ``VerbatimIndex.longest_match``: the longest run of generated tokens that occurs
  verbatim in a training text, found with a suffix automaton (linear time).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

METRICS = ("distinct_1", "distinct_2", "repetition_rate", "mean_logprob", "verbatim_span")
"""The per-generation metrics that the experiments aggregate and plot."""

METRIC_NAMES = {
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "repetition_rate": "repetition rate",
    "mean_logprob": "mean log-prob",
    "verbatim_span": "longest copied span",
    "seed_disagreement": "seed disagreement",
    "unique_text_fraction": "distinct texts per seed",
}
"""Short names of the metrics (and of 5.2's per-setting ``seed_disagreement``, the share of seed pairs
giving different texts, and ``unique_text_fraction``, distinct texts / seeds) for tables and reports."""


def ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple]:
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[Hashable], n: int) -> float:
    """Unique n-grams divided by the number of n-grams; NaN when the text has no n-gram."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition_rate(tokens: Sequence[Hashable], n: int = 4) -> float:
    """Share of n-grams that already occurred earlier in the text (0 = none repeats)."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else math.nan


def mean_logprob(logprobs) -> float:
    """Mean of per-token log-probabilities, ignoring NaN (padding after ``eos_id``)."""
    values = [float(x) for x in logprobs if not math.isnan(float(x))]
    return sum(values) / len(values) if values else math.nan


class VerbatimIndex:
    """Suffix automaton of a training token sequence, for longest-copied-span queries.

    Built once in O(len(train)); each query costs O(len(query)). The automaton
    recognises every substring of the training sequence, so walking a query
    through it (falling back along suffix links on a mismatch) gives, at every
    position, the longest suffix of the query prefix that occurs in training.
    """

    def __init__(self, train_tokens: Sequence[Hashable]):
        self.size = len(train_tokens)
        self._next: list[dict] = [{}]
        self._link = [-1]
        self._len = [0]
        last = 0
        for tok in train_tokens:
            last = self._extend(last, tok)

    def _extend(self, last: int, tok) -> int:
        nxt, link, length = self._next, self._link, self._len
        cur = len(length)
        nxt.append({})
        length.append(length[last] + 1)
        link.append(0)
        p = last
        while p != -1 and tok not in nxt[p]:
            nxt[p][tok] = cur
            p = link[p]
        if p != -1:
            q = nxt[p][tok]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(length)
                nxt.append(dict(nxt[q]))
                length.append(length[p] + 1)
                link.append(link[q])
                while p != -1 and nxt[p].get(tok) == q:
                    nxt[p][tok] = clone
                    p = link[p]
                link[q] = clone
                link[cur] = clone
        return cur

    def longest_match(self, tokens: Sequence[Hashable]) -> tuple[int, int]:
        """``(length, start)``: the longest run ``tokens[start:start+length]`` found in training."""
        state, cur_len, best, best_end = 0, 0, 0, 0
        nxt, link, length = self._next, self._link, self._len
        for i, tok in enumerate(tokens):
            while state and tok not in nxt[state]:
                state = link[state]
                cur_len = length[state]
            if tok in nxt[state]:
                state = nxt[state][tok]
                cur_len += 1
            else:
                state, cur_len = 0, 0
            if cur_len > best:
                best, best_end = cur_len, i + 1
        return best, best_end - best


def text_metrics(tokens: Sequence[int], logprobs=None, index: VerbatimIndex | None = None) -> dict:
    """All metrics of one generated continuation (``tokens`` excludes the prompt).

    ``verbatim_span``/``verbatim_start`` are NaN/-1 when no training index is given.
    """
    tokens = list(tokens)
    out = {
        "num_generated": len(tokens),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "repetition_rate": repetition_rate(tokens, 4),
        "mean_logprob": mean_logprob(logprobs) if logprobs is not None else math.nan,
    }
    if index is None:
        out["verbatim_span"], out["verbatim_start"] = math.nan, -1
    else:
        out["verbatim_span"], out["verbatim_start"] = index.longest_match(tokens)
    return out
