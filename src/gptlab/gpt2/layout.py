"""What a GPT-2 release and its conversion look like: names, shapes, hparams (no TensorFlow, no torch).

* the files of an OpenAI release (:data:`FILENAMES`), OpenAI's known file sizes
  and hyperparameters per size (:data:`KNOWN_FILE_SIZES`, :data:`GPT2_HPARAMS`);
* the converted file: :data:`SAFETENSORS`, its metadata :data:`FORMAT`,
  :data:`FORMAT_VERSION` and :data:`DIGEST_KEY`;
* ``hparams.json``: :func:`check_hparams`, :func:`read_hparams` and the
  ``GPTModel`` config they imply (:func:`gpt2_model_config`);
* how OpenAI's variables map onto ``GPTModel``'s state dict. OpenAI stores
  each layer's linear maps as ``[1, d_in, d_out]`` "conv1d" kernels and the
  query/key/value maps fused into one ``c_attn`` of width ``3 * d``;
  ``torch.nn.Linear`` keeps ``[d_out, d_in]``. The mapping is kept in one table
  (:func:`state_dict_targets`, :func:`transform`), used by the safetensors
  conversion; the book's ``load_weights_into_gpt`` follows the same layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZES = ("124M", "355M", "774M", "1558M")
HPARAMS = "hparams.json"
DATA = "model.ckpt.data-00000-of-00001"
INDEX = "model.ckpt.index"
FILENAMES = ("checkpoint", "encoder.json", HPARAMS, DATA, INDEX, "model.ckpt.meta", "vocab.bpe")
MANIFEST = "manifest.json"
# Sizes in bytes of OpenAI's files, as checked by the book's tests; other sizes use Content-Length.
KNOWN_FILE_SIZES = {
    "124M": dict(zip(FILENAMES, (77, 1042301, 90, 497759232, 5215, 471155, 456318), strict=True)),
    "355M": dict(zip(FILENAMES, (77, 1042301, 91, 1419292672, 10399, 926519, 456318), strict=True)),
}
# OpenAI's published shapes, for documentation and benchmarks. Models are always
# built from the downloaded hparams.json, never from this table.
GPT2_HPARAMS = {
    size: {"n_vocab": 50257, "n_ctx": 1024, "n_embd": d, "n_head": h, "n_layer": n}
    for size, (d, h, n) in {
        "124M": (768, 12, 12),
        "355M": (1024, 16, 24),
        "774M": (1280, 20, 36),
        "1558M": (1600, 25, 48),
    }.items()
}
HPARAM_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")

SAFETENSORS = "model.safetensors"
FORMAT = "gptlab-gpt2"
# 2: the metadata holds DIGEST_KEY, the SHA-256 of the tensor data (everything after the header).
FORMAT_VERSION = "2"
DIGEST_KEY = "data_sha256"


def check_size(model_size: str) -> None:
    """Raise ``ValueError`` unless ``model_size`` names one of OpenAI's releases (:data:`SIZES`)."""
    if model_size not in SIZES:
        raise ValueError(f"model_size={model_size!r} is not a GPT-2 release; choose one of {SIZES}")


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


def read_hparams(path) -> dict:
    """The checked hyperparameters of an ``hparams.json`` file; raise naming the file if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: every GPT-2 release ships an hparams.json")
    try:
        return check_hparams(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-download it") from err


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
# GPTModel's attention projections, in the order OpenAI fuses them into c_attn.
QKV = ("W_query", "W_key", "W_value")


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
            return [(f"{prefix}att.{m}.weight", f"qkv_w{j}") for j, m in enumerate(QKV)]
        if rest == "attn/c_attn/b":
            return [(f"{prefix}att.{m}.bias", f"qkv_b{j}") for j, m in enumerate(QKV)]
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
    """The shape :func:`transform` gives an array of ``shape``, without the array."""
    if kind == "same":
        return tuple(shape)
    if kind == "t":
        return (shape[2], shape[1])
    if kind.startswith("qkv_w"):
        return (shape[2] // 3, shape[1])
    return (shape[0] // 3,)
