"""Decoding: the book's ``generate_text_simple`` and ``generate`` (chapter 5).

``generate`` keeps the book's signature and, called the book's way, draws from
PyTorch's global RNG exactly as the book's code does. Inside it uses a
key/value cache (no full-context recompute per token), handles batches
correctly (per-row top-k threshold and per-row ``eos_id``), and accepts a
``generator`` for explicit, reproducible seed streams plus ``top_p``.

For the experiments, ``seeds=`` gives every row of a batch its own RNG stream
(a sample does not depend on the batch it was drawn in), and
``generate_rows`` lets every row have its own temperature/top-k/seed and
returns the log-probabilities of the chosen tokens.

Decoding settings are checked in one place, :func:`check_setting`, once per
call and before the model runs; a ``ValueError`` names the bad value.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

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


class RowSetting(NamedTuple):
    """Decoding settings of one batch row: its own temperature, top-k, top-p and seed."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def checked(self) -> RowSetting:
        """This setting, after :func:`check_setting` (a ``ValueError`` names the first bad value)."""
        return check_setting(*self)


def _is_integer(value, kind=numbers.Integral) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def check_setting(temperature=0.0, top_k=None, top_p=None, seed=None) -> RowSetting:
    """Check one row's decoding settings and return them as a :class:`RowSetting`.

    ``temperature`` >= 0 (0 is greedy), ``top_k`` a positive integer, ``top_p``
    in (0, 1], ``seed`` an int; ``None`` turns top-k, top-p off and leaves a
    row on the global RNG. Every decoding function checks its settings here.
    """
    if not temperature >= 0:  # NaN fails this too
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and not (_is_integer(top_k) and top_k >= 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None (no top-k filtering)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] or None (no nucleus filtering)")
    if seed is not None and not _is_integer(seed, int):  # torch.Generator takes Python ints only
        raise ValueError(f"seed={seed!r} must be an int (or None for the global RNG)")
    return RowSetting(temperature, top_k, top_p, seed)


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    top_k = min(top_k, logits.shape[-1])
    min_val = torch.topk(logits, top_k).values[..., -1:]
    return torch.where(logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits)


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    remove = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)


def _distribution(logits, setting: RowSetting):
    if setting.top_k is not None:
        logits = _top_k(logits, setting.top_k)
    if setting.temperature == 0.0:
        return None, logits
    logits = logits / setting.temperature
    if setting.top_p is not None:
        logits = _top_p(logits, setting.top_p)
    logits = logits - logits.max(dim=-1, keepdim=True).values
    return torch.softmax(logits, dim=-1), logits


def _sample(logits, setting: RowSetting, generator=None):
    probs, logits = _distribution(logits, setting)
    if probs is None:
        return torch.argmax(logits, dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def _sample_rows(logits, settings, generators) -> torch.Tensor:
    # Each row goes through exactly the operations a batch of one would and draws only from its own
    # generator, so its tokens do not depend on the batch it is in (None: the global RNG).
    out = torch.empty(logits.shape[0], 1, dtype=torch.long, device=logits.device)
    for i, (setting, gen) in enumerate(zip(settings, generators, strict=True)):
        out[i] = _sample(logits[i : i + 1], setting, gen)[0]
    return out


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep logits >= the k-th largest of each row (ties at the k-th are kept)."""
    return _top_k(logits, check_setting(top_k=top_k).top_k)


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches ``top_p``."""
    return _top_p(logits, check_setting(top_p=top_p).top_p)


def next_token_distribution(logits, temperature=0.0, top_k=None, top_p=None):
    """Filtered, temperature-scaled probabilities (``None`` when greedy) and the logits behind them."""
    return _distribution(logits, check_setting(temperature, top_k, top_p))


def sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    """The next token of each row: greedy at temperature 0, else drawn (from ``generator`` if given)."""
    return _sample(logits, check_setting(temperature, top_k, top_p), generator)


class Generation(NamedTuple):
    """Output of :func:`generate_rows`.

    ``token_ids``: ``[batch, n + new]`` (prompt included; rows that ended are
    padded with ``eos_id``); ``logprobs``: ``[batch, new]`` log-probabilities of
    the chosen tokens under the *untempered, unfiltered* model (NaN on padding);
    ``num_generated``: per row, the tokens generated before ``eos_id``.
    """

    token_ids: torch.Tensor
    logprobs: torch.Tensor
    num_generated: list[int]


def _check_call(idx, max_new_tokens) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if idx.dim() != 2 or idx.shape[1] < 1:
        raise ValueError(f"idx has shape {tuple(idx.shape)}; expected [batch, tokens] with >= 1 token")


def _one_row_each(idx, n_rows: int, what: str):
    """``idx`` with one row per setting or seed: a single-row prompt is repeated ``n_rows`` times."""
    if idx.shape[0] == 1 and n_rows > 1:
        idx = idx.expand(n_rows, -1)
    if idx.shape[0] != n_rows:
        raise ValueError(
            f"got {n_rows} {what} for a batch of {idx.shape[0]} rows; pass one per row "
            f"(or a single-row prompt, which is repeated for each)"
        )
    return idx


def _generator(seed, device):
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def _next_logits(model, context_size, cache_len, use_cache):
    """A function of ``idx`` giving the next-token logits of every row.

    With the cache, the first call (and every call after the cache is full)
    fills it from the last ``context_size`` tokens, the window the book's
    recompute path sees; the calls in between feed only the newest token.
    """
    cache = None

    def step(idx):
        nonlocal cache
        if not use_cache:
            return model(idx[:, -context_size:])[:, -1, :]
        if cache is None or cache.pos >= cache.max_len:
            weight = model.tok_emb.weight
            cache = KVCache(model.cfg, idx.shape[0], cache_len, weight.device, weight.dtype)
            return model(idx[:, -context_size:], cache=cache)[:, -1, :]
        return model(idx[:, -1:], cache=cache)[:, -1, :]

    return step


def _decode(model, idx, max_new_tokens, context_size, choose, eos_id, use_cache, want_logprobs, on_token):
    """The decoding loop shared by :func:`generate` and :func:`generate_rows`.

    ``on_token`` (optional) is called with each step's new tokens (``[batch, 1]``)
    once they are appended, so callers can stream them.
    """
    context_size = min(context_size, model.pos_emb.num_embeddings)
    batch = idx.shape[0]
    done = torch.zeros(batch, 1, dtype=torch.bool, device=idx.device)
    logprobs = []
    # Only as many cache slots as this call can use: big models with a long
    # context would otherwise allocate (and zero) gigabytes for short samples.
    cache_len = min(context_size, idx.shape[1] + max_new_tokens)
    next_logits = _next_logits(model, context_size, cache_len, use_cache)
    for _ in range(max_new_tokens):
        logits = next_logits(idx)
        idx_next = choose(logits)
        if want_logprobs:
            lp = torch.log_softmax(logits.float(), dim=-1).gather(1, idx_next)
            logprobs.append(lp.masked_fill(done, float("nan")))
        if eos_id is not None:
            if batch == 1 and idx_next.item() == eos_id:  # the book: stop, eos not appended
                logprobs = logprobs[:-1]
                break
            idx_next = torch.where(done, torch.full_like(idx_next, eos_id), idx_next)
            done |= idx_next == eos_id
        idx = torch.cat((idx, idx_next), dim=1)
        if on_token is not None:
            on_token(idx_next)
        if eos_id is not None and bool(done.all()):
            break
    return idx, logprobs


def _per_row(idx, settings, what: str, generators=None):
    """``(idx, settings, generators)`` with one of each per row, the settings checked.

    Without ``generators``, a row's generator is seeded with its setting's seed
    (``None``: the row draws from the global RNG).
    """
    settings = [s.checked() for s in settings]
    idx = _one_row_each(idx, len(settings), what)
    if generators is None:
        generators = [_generator(s.seed, idx.device) for s in settings]
    return idx, settings, generators


def _chooser(idx, setting, generator, seeds, generators):
    """``(idx, choose)``: ``choose(logits)`` picks the next tokens as :func:`generate` was asked to."""
    if seeds is None and generators is None:
        return idx, lambda logits: _sample(logits, setting, generator)
    if generator is not None:
        raise ValueError("pass generator= (one stream) or seeds=/generators= (one per row), not both")
    if seeds is not None and generators is not None:
        raise ValueError("pass either seeds= or generators=, not both")
    if seeds is not None:
        rows = [setting._replace(seed=s) for s in seeds]
        idx, rows, gens = _per_row(idx, rows, "seeds")
    else:
        gens = list(generators)
        idx, rows, gens = _per_row(idx, [setting] * len(gens), "generators", gens)
    return idx, lambda logits: _sample_rows(logits, rows, gens)


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
    seeds=None,
    generators=None,
    use_cache=True,
    on_token=None,
):
    """Generate ``max_new_tokens`` tokens after ``idx`` (shape ``[batch, n]``).

    ``temperature=0`` is greedy; ``top_k`` keeps ties at the k-th logit. With one
    row, generation stops early at ``eos_id`` as in the book; with several rows,
    a row that produced ``eos_id`` is padded with ``eos_id`` while the others go
    on, and generation stops once every row is done.

    Randomness: with no ``generator``/``seeds``/``generators`` the draws come
    from PyTorch's global RNG exactly as in the book (``torch.manual_seed(123)``
    reproduces its samples). ``generator`` is one stream for the whole batch.
    ``seeds`` (ints) or ``generators`` give every row its own stream, so row
    ``i`` with seed ``s`` yields the same tokens at any batch size; a
    single-row ``idx`` is then repeated once per seed. A ``torch.Generator``
    seeded with ``s`` draws what ``torch.manual_seed(s)`` would.

    Streaming: ``on_token`` is called after every step with that step's new
    tokens (a ``[batch, 1]`` tensor), in order, before the next forward pass.
    It sees exactly the tokens the returned tensor holds after the prompt (a
    single row that stops at ``eos_id`` does not report the ``eos_id``).
    """
    setting = check_setting(temperature, top_k, top_p)
    _check_call(idx, max_new_tokens)
    idx, choose = _chooser(idx, setting, generator, seeds, generators)
    idx, _ = _decode(model, idx, max_new_tokens, context_size, choose, eos_id, use_cache, False, on_token)
    return idx


@torch.no_grad()
def generate_rows(model, idx, max_new_tokens, context_size, settings, eos_id=None, *, use_cache=True):
    """Decode a batch in which every row has its own :class:`RowSetting` (and seed).

    ``idx`` is ``[batch, n]`` or a single row repeated for every setting. Rows
    with ``seed=None`` draw from the global RNG. Returns a :class:`Generation`
    with the log-probabilities of the chosen tokens under the untempered model,
    which the experiments use as a quality measure.
    """
    _check_call(idx, max_new_tokens)
    rows = [s if isinstance(s, RowSetting) else RowSetting(*s) for s in settings]
    idx, rows, gens = _per_row(idx, rows, "settings")
    n = idx.shape[1]

    def choose(logits):
        return _sample_rows(logits, rows, gens)

    out, logprobs = _decode(model, idx, max_new_tokens, context_size, choose, eos_id, use_cache, True, None)
    lp = torch.cat(logprobs, dim=1) if logprobs else torch.empty(out.shape[0], 0)
    new = out[:, n:]
    if eos_id is None:
        counts = [new.shape[1]] * out.shape[0]
    else:
        is_eos = new == eos_id
        counts = [int(r.nonzero()[0]) if r.any() else new.shape[1] for r in is_eos]
    return Generation(out, lp, counts)


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
