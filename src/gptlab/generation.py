"""Decoding: the book's ``generate_text_simple`` and ``generate`` (chapter 5).

``generate`` keeps the book's signature and, called the book's way, draws from
PyTorch's global RNG exactly as the book's code does. Inside it uses a
key/value cache (no full-context recompute per token), handles batches
correctly (per-row top-k threshold and per-row ``eos_id``), and accepts a
``generator`` for explicit, reproducible seed streams plus ``top_p``.
"""

from __future__ import annotations

import torch

from .model import KVCache


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy decoding, recomputing the whole context for every token (book listing 4.8)."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep logits >= the k-th largest of each row (ties at the k-th are kept)."""
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (or None for no top-k filtering)")
    top_k = min(top_k, logits.shape[-1])
    min_val = torch.topk(logits, top_k).values[..., -1:]
    return torch.where(logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits)


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches ``top_p``."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1]")
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    remove = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)


def next_token_distribution(logits, temperature=0.0, top_k=None, top_p=None):
    """Filtered, temperature-scaled probabilities (``None`` when greedy)."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None:
        logits = apply_top_k(logits, top_k)
    if temperature == 0.0:
        return None, logits
    logits = logits / temperature
    if top_p is not None:
        logits = apply_top_p(logits, top_p)
    logits = logits - logits.max(dim=-1, keepdim=True).values
    return torch.softmax(logits, dim=-1), logits


def sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    probs, logits = next_token_distribution(logits, temperature, top_k, top_p)
    if probs is None:
        return torch.argmax(logits, dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model,
    idx,
    max_new_tokens,
    context_size,
    temperature=0.0,
    top_k=None,
    eos_id=None,
    *,
    top_p=None,
    generator=None,
    use_cache=True,
):
    """Generate ``max_new_tokens`` tokens after ``idx`` (shape ``[batch, n]``).

    ``temperature=0`` is greedy; ``top_k`` keeps ties at the k-th logit. With one
    row, generation stops early at ``eos_id`` as in the book; with several rows,
    a row that produced ``eos_id`` is padded with ``eos_id`` while the others go
    on, and generation stops once every row is done.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    context_size = min(context_size, model.pos_emb.num_embeddings)
    batch = idx.shape[0]
    done = torch.zeros(batch, 1, dtype=torch.bool, device=idx.device)
    cache = None
    for _ in range(max_new_tokens):
        if use_cache:
            if cache is None or cache.pos >= context_size:
                # (Re)fill the cache from the last ``context_size`` tokens: the
                # same window the book's recompute path sees.
                idx_cond = idx[:, -context_size:]
                weight = model.tok_emb.weight
                cache = KVCache(model.cfg, batch, context_size, weight.device, weight.dtype)
                logits = model(idx_cond, cache=cache)
            else:
                logits = model(idx[:, -1:], cache=cache)
        else:
            logits = model(idx[:, -context_size:])
        idx_next = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
        if eos_id is not None:
            if batch == 1 and idx_next.item() == eos_id:
                break
            idx_next = torch.where(done, torch.full_like(idx_next, eos_id), idx_next)
            done |= idx_next == eos_id
        idx = torch.cat((idx, idx_next), dim=1)
        if eos_id is not None and bool(done.all()):
            break
    return idx


def softmax_with_temperature(logits, temperature):
    scaled_logits = logits / temperature
    return torch.softmax(scaled_logits, dim=0)


def print_sampled_tokens(probas, inverse_vocab=None, num_draws=1000, seed=123):
    """Exercise 5.1: draw ``num_draws`` tokens and print how often each came up.

    Returns the counts per token id (a tensor), so callers need not parse the
    printout. ``inverse_vocab`` maps ids to words (the book's toy vocabulary by
    default).
    """
    inverse_vocab = inverse_vocab or TOY_INVERSE_VOCAB
    torch.manual_seed(seed)
    sample = [torch.multinomial(probas, num_samples=1).item() for _ in range(num_draws)]
    sampled_ids = torch.bincount(torch.tensor(sample), minlength=len(probas))
    for i, freq in enumerate(sampled_ids):
        print(f"{freq} x {inverse_vocab[i]}")
    return sampled_ids


TOY_VOCAB = {
    "closer": 0,
    "every": 1,
    "effort": 2,
    "forward": 3,
    "inches": 4,
    "moves": 5,
    "pizza": 6,
    "toward": 7,
    "you": 8,
}
TOY_INVERSE_VOCAB = {v: k for k, v in TOY_VOCAB.items()}
TOY_NEXT_TOKEN_LOGITS = (4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79)
