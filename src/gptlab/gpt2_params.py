"""How OpenAI's GPT-2 variables map onto the book's ``GPTModel`` (no TensorFlow here).

OpenAI stores each layer's linear maps as ``[1, d_in, d_out]`` "conv1d"
kernels and the query/key/value maps fused into one ``c_attn`` of width
``3 * d``; ``torch.nn.Linear`` keeps ``[d_out, d_in]``. The mapping is kept in
one table, used both by the safetensors conversion and by the book's
``load_weights_into_gpt``-style API.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

HPARAM_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")


def check_hparams(hparams: dict) -> dict:
    """Return the five GPT-2 hyperparameters of ``hparams`` (OpenAI's ``hparams.json``) or raise."""
    missing = [k for k in HPARAM_KEYS if k not in hparams]
    if missing:
        raise ValueError(f"GPT-2 hparams {hparams!r} lack {missing}; hparams.json needs all of {HPARAM_KEYS}")
    for key in HPARAM_KEYS:
        value = hparams[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"GPT-2 hparams {key}={value!r} must be a positive integer")
    if hparams["n_embd"] % hparams["n_head"]:
        raise ValueError(
            f"GPT-2 hparams n_embd={hparams['n_embd']} is not divisible by n_head={hparams['n_head']}"
        )
    return {k: hparams[k] for k in HPARAM_KEYS}


def gpt2_model_config(hparams: dict, *, drop_rate: float = 0.0) -> dict:
    """The ``GPTModel`` config for OpenAI ``hparams`` (the book's ``NEW_CONFIG``: qkv_bias, full context)."""
    hp = check_hparams(hparams)
    return {
        "vocab_size": hp["n_vocab"],
        "context_length": hp["n_ctx"],
        "emb_dim": hp["n_embd"],
        "n_heads": hp["n_head"],
        "n_layers": hp["n_layer"],
        "drop_rate": drop_rate,
        "qkv_bias": True,
    }


def tf_variable_shapes(hparams: dict) -> dict[str, tuple[int, ...]]:
    """Every variable of an OpenAI GPT-2 checkpoint with these hparams, sorted by name."""
    hp = check_hparams(hparams)
    d = hp["n_embd"]
    shapes = {"model/wte": (hp["n_vocab"], d), "model/wpe": (hp["n_ctx"], d)}
    shapes |= {"model/ln_f/g": (d,), "model/ln_f/b": (d,)}
    for i in range(hp["n_layer"]):
        h = f"model/h{i}"
        for ln in ("ln_1", "ln_2"):
            shapes |= {f"{h}/{ln}/g": (d,), f"{h}/{ln}/b": (d,)}
        shapes |= {f"{h}/attn/c_attn/w": (1, d, 3 * d), f"{h}/attn/c_attn/b": (3 * d,)}
        shapes |= {f"{h}/attn/c_proj/w": (1, d, d), f"{h}/attn/c_proj/b": (d,)}
        shapes |= {f"{h}/mlp/c_fc/w": (1, d, 4 * d), f"{h}/mlp/c_fc/b": (4 * d,)}
        shapes |= {f"{h}/mlp/c_proj/w": (1, 4 * d, d), f"{h}/mlp/c_proj/b": (d,)}
    return dict(sorted(shapes.items()))


def check_tf_layout(found: dict, expected: dict, where: str) -> None:
    """Raise naming every missing, unexpected or mis-shaped variable of ``found`` (name -> shape)."""
    problems = [f"missing {n} {expected[n]}" for n in expected if n not in found]
    problems += [f"unexpected {n} {found[n]}" for n in found if n not in expected]
    problems += [
        f"{n} has shape {found[n]}, hparams.json implies {expected[n]}"
        for n in expected
        if n in found and tuple(found[n]) != expected[n]
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(
            f"{where} does not match its hparams.json: {shown}. Make sure hparams.json and the "
            "model.ckpt.* files come from the same GPT-2 release (re-download if unsure)"
        )


# (OpenAI name within a block, GPTModel name within trf_blocks.i, kind)
_BLOCK = (
    ("ln_1/g", "norm1.scale", "same"),
    ("ln_1/b", "norm1.shift", "same"),
    ("ln_2/g", "norm2.scale", "same"),
    ("ln_2/b", "norm2.shift", "same"),
    ("attn/c_proj/w", "att.out_proj.weight", "t"),
    ("attn/c_proj/b", "att.out_proj.bias", "same"),
    ("mlp/c_fc/w", "ff.layers.0.weight", "t"),
    ("mlp/c_fc/b", "ff.layers.0.bias", "same"),
    ("mlp/c_proj/w", "ff.layers.2.weight", "t"),
    ("mlp/c_proj/b", "ff.layers.2.bias", "same"),
)
_TOP = {
    "model/wte": "tok_emb.weight",
    "model/wpe": "pos_emb.weight",
    "model/ln_f/g": "final_norm.scale",
    "model/ln_f/b": "final_norm.shift",
}
_QKV = ("W_query", "W_key", "W_value")


def state_dict_targets(tf_name: str) -> list[tuple[str, str]]:
    """The ``(GPTModel key, kind)`` pairs one OpenAI variable becomes.

    kinds: ``same`` (copy), ``t`` (``w[0].T``), ``qkv_w<j>`` / ``qkv_b<j>`` (j-th
    third of the fused query/key/value weight, transposed, or bias).
    """
    if tf_name in _TOP:
        return [(_TOP[tf_name], "same")]
    parts = tf_name.split("/", 2)
    if len(parts) == 3 and parts[0] == "model" and parts[1][:1] == "h" and parts[1][1:].isdigit():
        prefix = f"trf_blocks.{int(parts[1][1:])}."
        rest = parts[2]
        if rest == "attn/c_attn/w":
            return [(f"{prefix}att.{m}.weight", f"qkv_w{j}") for j, m in enumerate(_QKV)]
        if rest == "attn/c_attn/b":
            return [(f"{prefix}att.{m}.bias", f"qkv_b{j}") for j, m in enumerate(_QKV)]
        for tf_rest, key, kind in _BLOCK:
            if rest == tf_rest:
                return [(prefix + key, kind)]
    raise ValueError(f"unknown GPT-2 variable {tf_name!r}: not part of OpenAI's GPT-2 checkpoint layout")


def transform(kind: str, array: np.ndarray) -> np.ndarray:
    """Apply one ``kind`` of :func:`state_dict_targets` (returns a view where possible)."""
    if kind == "same":
        return array
    if kind == "t":
        return array[0].T
    j = int(kind[-1])
    if kind.startswith("qkv_w"):
        return np.split(array[0], 3, axis=-1)[j].T
    return np.split(array, 3, axis=-1)[j]


def transformed_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "same":
        return tuple(shape)
    if kind == "t":
        return (shape[2], shape[1])
    if kind.startswith("qkv_w"):
        return (shape[2] // 3, shape[1])
    return (shape[0] // 3,)


# --------------------------------------------------------------------------- the book's API


def load_gpt2_params_from_tf_ckpt(ckpt_path, settings: dict) -> dict:
    """The book's nested ``params`` dict (``wte, wpe, g, b, blocks[i][...]``) from a TF checkpoint.

    ``ckpt_path`` is a checkpoint prefix (``.../model.ckpt``) or its folder.
    Needs TensorFlow (``pip install 'gptlab[convert]'``).
    """
    from .convert import iter_tf_variables

    n_layer = check_hparams(settings)["n_layer"]
    params: dict = {"blocks": [{} for _ in range(n_layer)]}
    for name, array in iter_tf_variables(ckpt_path):
        parts = name.split("/")[1:]  # drop "model/"
        target = params
        if parts[0].startswith("h"):
            layer = int(parts[0][1:])
            if layer >= n_layer:
                raise ValueError(
                    f"checkpoint {ckpt_path} has variable {name} but settings say n_layer={n_layer}: "
                    "the hparams.json does not belong to this checkpoint"
                )
            target = params["blocks"][layer]
        for key in parts[1:-1]:
            target = target.setdefault(key, {})
        # The book squeezes every array; only the conv kernels have a leading 1 to drop.
        target[parts[-1]] = array[0] if array.ndim == 3 and array.shape[0] == 1 else array
    return params


def _assign(module: nn.Module, attr: str, array: np.ndarray, label: str) -> None:
    current = getattr(module, attr)
    if current is None:
        raise ValueError(
            f"{label}: the model has no such parameter; GPT-2 needs qkv_bias=True (use gpt2_model_config)"
        )
    if tuple(current.shape) != tuple(array.shape):
        raise ValueError(
            f"shape mismatch for {label}: model {tuple(current.shape)}, checkpoint {tuple(array.shape)}; "
            "build the model with gpt2_model_config(settings) from the checkpoint's hparams.json"
        )
    setattr(module, attr, nn.Parameter(torch.tensor(array)))


def load_weights_into_gpt(gpt, params: dict) -> None:
    """Copy the book's ``params`` into ``gpt`` as the book does (``out_head`` gets a copy of ``wte``)."""
    n_model, n_params = len(gpt.trf_blocks), len(params["blocks"])
    if n_model != n_params:
        raise ValueError(
            f"the model has {n_model} transformer blocks, the checkpoint {n_params}: "
            "build the model with gpt2_model_config(settings)"
        )
    _assign(gpt.pos_emb, "weight", params["wpe"], "pos_emb.weight (wpe)")
    _assign(gpt.tok_emb, "weight", params["wte"], "tok_emb.weight (wte)")
    for b, block in enumerate(params["blocks"]):
        blk = gpt.trf_blocks[b]
        c_attn = block["attn"]["c_attn"]
        for j, name in enumerate(_QKV):
            lin = getattr(blk.att, name)
            _assign(
                lin, "weight", np.split(c_attn["w"], 3, axis=-1)[j].T, f"trf_blocks.{b}.att.{name}.weight"
            )
            _assign(lin, "bias", np.split(c_attn["b"], 3, axis=-1)[j], f"trf_blocks.{b}.att.{name}.bias")
        pairs = (
            (blk.att.out_proj, block["attn"]["c_proj"], "att.out_proj"),
            (blk.ff.layers[0], block["mlp"]["c_fc"], "ff.layers.0"),
            (blk.ff.layers[2], block["mlp"]["c_proj"], "ff.layers.2"),
        )
        for lin, src, label in pairs:
            _assign(lin, "weight", src["w"].T, f"trf_blocks.{b}.{label}.weight")
            _assign(lin, "bias", src["b"], f"trf_blocks.{b}.{label}.bias")
        for norm, ln in ((blk.norm1, "ln_1"), (blk.norm2, "ln_2")):
            _assign(norm, "scale", block[ln]["g"], f"trf_blocks.{b}.{ln}.g")
            _assign(norm, "shift", block[ln]["b"], f"trf_blocks.{b}.{ln}.b")
    _assign(gpt.final_norm, "scale", params["g"], "final_norm.scale (ln_f/g)")
    _assign(gpt.final_norm, "shift", params["b"], "final_norm.shift (ln_f/b)")
    _assign(gpt.out_head, "weight", params["wte"], "out_head.weight (wte)")
