"""The book's GPT model (chapter 4), readable in one file.

Sub-module names, parameter names and the order in which parameters are
created match the book, so ``torch.manual_seed(123); GPTModel(cfg)`` yields the
book's initial weights and the book's state dicts load unchanged.

Beyond the book: an optional key/value cache (``KVCache``) for fast decoding,
and a fast mode (``GPTModel.set_fast``) that computes the same functions with
PyTorch's fused kernels. By default (fast mode off) and with ``cache=None``
the forward pass is the book's, operation for operation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CONFIG_KEYS = (
    "vocab_size",
    "context_length",
    "emb_dim",
    "n_heads",
    "n_layers",
    "drop_rate",
    "qkv_bias",
)

GPT_CONFIG_124M = {
    "vocab_size": 50257,  # Vocabulary size
    "context_length": 256,  # Shortened context length (orig: 1024)
    "emb_dim": 768,  # Embedding dimension
    "n_heads": 12,  # Number of attention heads
    "n_layers": 12,  # Number of layers
    "drop_rate": 0.1,  # Dropout rate
    "qkv_bias": False,  # Query-key-value bias
}


def validate_config(cfg: dict) -> dict:
    """Return ``cfg`` restricted to the model keys, or raise naming what is wrong."""
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"model config is missing {missing}; it needs all of {list(CONFIG_KEYS)}")
    for key in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"model config {key}={cfg[key]!r} must be a positive integer")
    if cfg["emb_dim"] % cfg["n_heads"]:
        raise ValueError(
            f"model config emb_dim={cfg['emb_dim']} must be divisible by n_heads={cfg['n_heads']}"
        )
    if not 0.0 <= float(cfg["drop_rate"]) < 1.0:
        raise ValueError(f"model config drop_rate={cfg['drop_rate']!r} must be in [0, 1)")
    return {k: cfg[k] for k in CONFIG_KEYS}


class KVCache:
    """Pre-allocated keys and values of every layer for incremental decoding."""

    def __init__(self, cfg: dict, batch_size: int, max_len: int, device=None, dtype=None):
        head_dim = cfg["emb_dim"] // cfg["n_heads"]
        shape = (batch_size, cfg["n_heads"], max_len, head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg["n_layers"])]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg["n_layers"])]
        self.max_len = max_len
        self.pos = 0  # number of positions already stored

    def reset(self) -> None:
        self.pos = 0


class MultiHeadAttention(nn.Module):
    fast = False  # class default, so the state dict and the book's path are untouched

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        b, num_tokens, _ = x.shape
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)

        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        start = 0
        if cache is not None:
            start = cache.pos
            end = start + num_tokens
            cache.keys[layer][:, :, start:end] = keys
            cache.values[layer][:, :, start:end] = values
            keys = cache.keys[layer][:, :, :end]
            values = cache.values[layer][:, :, :end]

        if self.fast:
            context_vec = self._fused_attention(queries, keys, values, start, num_tokens)
        else:
            context_vec = self._book_attention(queries, keys, values, start, num_tokens)
        context_vec = context_vec.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)

    def _book_attention(self, queries, keys, values, start, num_tokens):
        """The book's attention: scores, causal mask, softmax of scores / sqrt(d), dropout, x values."""
        attn_scores = queries @ keys.transpose(2, 3)
        mask_bool = self.mask[start : start + num_tokens, : start + num_tokens].bool()  # slice, then convert
        attn_scores.masked_fill_(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values

    def _fused_attention(self, queries, keys, values, start, num_tokens):
        """The book's masked, scaled softmax attention (dropout on the weights), fused where PyTorch can."""
        dropout_p = self.dropout.p if self.training else 0.0
        if start == 0 and dropout_p > 0 and queries.device.type == "cpu":
            # PyTorch's fused CPU kernels have no dropout, and its generic fallback builds a mask,
            # checks for fully masked rows and casts to float32: the book's operations are faster.
            # Without autocast, they run in the inputs' dtype (softmax in bf16 too) and draw the
            # book's dropout masks, so the data order, drawn from the same generator, is the book's.
            with torch.autocast(queries.device.type, enabled=False):
                return self._book_attention(queries, keys, values, start, num_tokens)
        if start == 0:  # queries and keys cover the same positions: the plain causal mask
            return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)
        if num_tokens == 1:  # one new token after the cache sees every stored position
            return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p)
        # Several new tokens after the cache: ``is_causal`` would align the mask
        # to the top-left corner, so pass the book's mask rows explicitly.
        allowed = ~self.mask[start : start + num_tokens, : start + num_tokens].bool()
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, dropout_p=dropout_p)


class LayerNorm(nn.Module):
    fast = False

    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        if self.fast:  # the same normalisation (biased variance, eps inside the root), fused
            return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    fast = False

    def forward(self, x):
        if self.fast:  # the book's tanh approximation, as one kernel
            return F.gelu(x, approximate="tanh")
        return (
            0.5
            * x
            * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))
        )


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        shortcut = x
        x = self.norm1(x)
        x = self.att(x, cache, layer)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = validate_config(cfg)
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx, cache: KVCache | None = None):
        _, seq_len = in_idx.shape
        start = 0 if cache is None else cache.pos
        if start + seq_len > self.cfg["context_length"]:
            raise ValueError(
                f"sequence of {start + seq_len} tokens exceeds context_length="
                f"{self.cfg['context_length']}; crop the input to the last "
                f"{self.cfg['context_length']} tokens"
            )
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(start, start + seq_len, device=in_idx.device))
        x = self.drop_emb(tok_embeds + pos_embeds)
        if cache is None:
            x = self.trf_blocks(x)
        else:
            for i, block in enumerate(self.trf_blocks):
                x = block(x, cache, i)
            cache.pos += seq_len
        x = self.final_norm(x)
        return self.out_head(x)

    def set_fast(self, enabled: bool = True) -> GPTModel:
        """Switch attention, LayerNorm and GELU to PyTorch's fused kernels (or back).

        The functions computed are the book's (causal attention with dropout on
        the attention weights, biased-variance LayerNorm, tanh-approximated
        GELU); only rounding differs. Parameters, state dict and
        initialisation do not change, so checkpoints move freely between modes.
        """
        for module in self.modules():
            if isinstance(module, (MultiHeadAttention, LayerNorm, GELU)):
                module.fast = bool(enabled)
        return self

    @property
    def is_fast(self) -> bool:
        return self.final_norm.fast


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
