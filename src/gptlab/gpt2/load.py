"""A converted GPT-2 into ``GPTModel``: the lean loader, its data check, and the book's API.

* :func:`load_gpt2` memory-maps ``model.safetensors`` into a model built on the
  meta device (no random init, no second copy of the weights); no TensorFlow.
* :func:`verify_gpt2_file` checks the tensor data against the SHA-256 stored in
  the file's header, which :func:`load_gpt2` does first by default.
* :func:`release_origin` says whether a GPT-2 can be OpenAI's release at all
  (its hparams and data size against OpenAI's), so results can say when they are not.
* the book's ``download_and_load_gpt2`` and ``load_weights_into_gpt``, so the
  book's code runs against gptlab (reading the checkpoint needs TensorFlow).
"""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.overrides import TorchFunctionMode

from ..model import GPTModel
from .fetch import download_gpt2
from .layout import (
    DATA,
    DIGEST_KEY,
    FORMAT,
    GPT2_HPARAMS,
    HPARAMS,
    INDEX,
    KNOWN_FILE_SIZES,
    QKV,
    SAFETENSORS,
    SIZES,
    check_hparams,
    check_size,
    gpt2_model_config,
    read_hparams,
    tf_variable_shapes,
)
from .tf import load_gpt2_params_from_tf_ckpt

_MAX_HEADER = 100 << 20  # bytes; safetensors refuses larger headers too


def gpt2_file(path) -> Path:
    """The ``model.safetensors`` of a converted GPT-2 folder, or ``path`` itself when it is a file.

    Raises ``FileNotFoundError`` saying what to do: convert the folder first,
    download it first, or pass a folder rather than a model size.
    """
    path = Path(path)
    if path.is_dir():
        file = path / SAFETENSORS
        if not file.is_file():
            hint = (
                f"convert it first: gptlab.convert.convert_tf_checkpoint({str(path)!r})"
                if (path / INDEX).is_file()
                else "download (gptlab.gpt2.download_gpt2) and convert it first"
            )
            raise FileNotFoundError(f"{path} has no {SAFETENSORS}; {hint}")
        return file
    if not path.is_file():
        if str(path) in SIZES:
            raise FileNotFoundError(
                f"{path!s} is a model size, not a file: pass the folder it was downloaded and converted "
                "into (e.g. results/gpt2/124M) or its model.safetensors"
            )
        raise FileNotFoundError(f"{path} does not exist; pass a converted GPT-2 folder or model.safetensors")
    return path


def _not_gptlab(file: Path, meta: dict) -> ValueError:
    return ValueError(
        f"{file} is not a gptlab GPT-2 file (metadata format={meta.get('format')!r}); "
        "create it with gptlab.convert.convert_tf_checkpoint"
    )


def read_gpt2_hparams(path) -> dict:
    """The hparams stored in a converted file (or folder), without reading any weights."""
    file = gpt2_file(path)
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT or "hparams" not in meta:
        raise _not_gptlab(file, meta)
    return check_hparams(json.loads(meta["hparams"]))


# --------------------------------------------------------------------------- the data check


def _reconvert_hint(file: Path) -> str:
    src = next((d for d in (file.parent / "tf", file.parent) if (d / INDEX).is_file()), None)
    command = f"gptlab convert {src or 'DIR'} --out {file}"
    return (
        f"Convert the checkpoint again ({command}, or gptlab.convert.convert_tf_checkpoint); "
        f"in the pipeline, move it aside (mv {file} {file}.damaged) and run snakemake again"
    )


def _damaged(file: Path, what: str) -> ValueError:
    return ValueError(f"{file} is damaged{what}. {_reconvert_hint(file)}")


def _read_header(f, file: Path, size: int) -> tuple[dict, dict, int]:
    """``(tensor entries, metadata, header length)`` of the safetensors file open as ``f``."""
    raw = f.read(8)
    n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
    if not 0 < n <= min(size - 8, _MAX_HEADER):
        raise ValueError(f"{file} is not a safetensors file (header length {n}). {_reconvert_hint(file)}")
    try:
        header = json.loads(f.read(n))
    except ValueError as err:
        raise _damaged(file, f": its header is not JSON ({err})") from None
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != FORMAT:
        raise _not_gptlab(file, meta)
    return header, meta, n


def _data_length(file: Path, header: dict, available: int) -> int:
    """The bytes of tensor data ``header`` describes; raise unless the file holds exactly that many."""
    try:
        n_data = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (KeyError, IndexError, TypeError, ValueError):
        raise _damaged(file, ": its header lists no valid offsets") from None
    if available != n_data:
        state = "truncated" if available < n_data else "has extra bytes"
        raise _damaged(
            file, f" ({state}): {available:,} bytes of tensor data, its header describes {n_data:,}"
        )
    return n_data


def _sha256_rest(f) -> str:
    """The SHA-256 of what is left to read in ``f``, in 1 MiB chunks (no copy of the weights in memory)."""
    digest = hashlib.sha256()
    buf = memoryview(bytearray(1 << 20))
    while got := f.readinto(buf):
        digest.update(buf[:got])
    return digest.hexdigest()


def _data_digest(file: Path) -> tuple[str | None, str]:
    """``(sha256 recorded in the header or None, one-line result)``; raise ``ValueError`` if damaged."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        header, meta, n = _read_header(f, file, size)
        n_data = _data_length(file, header, size - 8 - n)
        expected = meta.get(DIGEST_KEY)
        if expected is None:
            if meta.get("format_version") == "1":
                return None, (
                    f"no digest of the tensor data (format_version 1, written before digests were stored): "
                    f"its {n_data:,} bytes were not verified; convert it again to enable verification"
                )
            raise _damaged(file, f": its header lacks {DIGEST_KEY}")
        actual = _sha256_rest(f)
    if actual != expected:
        what = (
            f"the SHA-256 of its {n_data:,} bytes of tensor data is {actual}, its header records {expected}"
        )
        raise _damaged(file, f": {what}")
    return expected, f"the SHA-256 of the {n_data:,} bytes of tensor data matches the digest in the header"


def verify_gpt2_file(path) -> str:
    """Check a converted GPT-2 (folder or ``model.safetensors``) against the digest in its header.

    Returns one line (without the file's name) saying what was verified. Raises ``ValueError`` naming the
    file and saying to convert again when the tensor data does not match its
    SHA-256, the file is truncated, or its header is damaged. A file of
    format_version 1 holds no digest: the line says so, nothing is raised.
    """
    return _data_digest(gpt2_file(path))[1]


# --------------------------------------------------------------------------- OpenAI's or not


def _hparams_and_data(path) -> tuple[dict, dict[Path, int]]:
    """The hparams of a converted GPT-2 or of a downloaded release, and ``{file: bytes of tensor data}``.

    A converted file counts its tensor data (everything after the header); a downloaded data file
    beside it (``<folder>/tf`` or ``<folder>``), or the data file of a release folder, counts whole.
    """
    path = Path(path)
    if path.is_dir() and not (path / SAFETENSORS).is_file() and (path / HPARAMS).is_file():
        hparams, folder, sizes = read_hparams(path / HPARAMS), path, {}
    else:
        file = gpt2_file(path)
        with open(file, "rb") as f:
            _, _, n = _read_header(f, file, file.stat().st_size)
        hparams, folder = read_gpt2_hparams(file), file.parent
        sizes = {file: file.stat().st_size - 8 - n}
    for data in (folder / DATA, folder / "tf" / DATA):
        if data.is_file():
            sizes[data] = data.stat().st_size
    return hparams, sizes


def _openai_data_bytes(size: str) -> int:
    """The size of OpenAI's data file of release ``size``: known, or 4 bytes per value of its variables."""
    known = KNOWN_FILE_SIZES.get(size, {}).get(DATA)
    shapes = tf_variable_shapes(GPT2_HPARAMS[size]).values()
    return known or 4 * sum(int(np.prod(s)) for s in shapes)


def _shape(hparams: dict) -> str:
    return ", ".join(f"{k}={hparams[k]}" for k in ("n_layer", "n_head", "n_embd", "n_ctx", "n_vocab"))


def _differences(hparams: dict, size: str) -> str:
    theirs = GPT2_HPARAMS[size]
    keys = ("n_layer", "n_head", "n_embd", "n_ctx", "n_vocab")
    return ", ".join(f"{k} {hparams[k]} vs {theirs[k]}" for k in keys if hparams[k] != theirs[k])


def release_origin(path, model_size: str | None = None) -> dict:
    """Whether a GPT-2 can be OpenAI's release: ``{"matches_openai", "release", "evidence"}``.

    ``path`` is a converted GPT-2 (folder or ``model.safetensors``) or a downloaded release folder.
    ``release`` is the OpenAI release it is compared with: ``model_size`` when given, else the one
    whose hparams it has (``None`` when there is none); ``evidence`` says in one sentence what was
    found, without the path.

    What is compared: the hparams with OpenAI's for that release (:data:`GPT2_HPARAMS`), then the
    bytes of tensor data (of the converted file, and of the downloaded data file where it lies
    beside it) with the size of OpenAI's data file (:data:`KNOWN_FILE_SIZES`, else 4 bytes per value
    of OpenAI's variables: the table of docs/gpt2-weights.md).

    What this can tell: ``matches_openai`` False means certainly not OpenAI's release (a synthetic
    release such as the offline tests write, or another model's weights). What it cannot: True
    only means *consistent* with OpenAI's release. OpenAI publishes no hashes of its weights, so
    the values are not checked: random or fine-tuned weights of the same shape have the same size.
    The checks of content are the book's numbers themselves (exercise 5.5's losses, 5.6's sample).
    """
    if model_size is not None:
        check_size(model_size)
    hparams, data = _hparams_and_data(path)
    candidates = [model_size] if model_size else list(SIZES)
    release = next((s for s in candidates if GPT2_HPARAMS[s] == hparams), None)
    if release is None:
        if model_size:
            found = f"its hparams differ from OpenAI's {model_size} ({_differences(hparams, model_size)})"
        else:
            found = f"its hparams ({_shape(hparams)}) are those of none of OpenAI's releases"
        return {"matches_openai": False, "release": model_size, "evidence": f"not OpenAI's weights: {found}"}
    expected = _openai_data_bytes(release)
    wrong = {f: n for f, n in data.items() if n != expected}
    if wrong:
        found = " and ".join(f"{n:,} bytes in {f.name}" for f, n in wrong.items())
        evidence = (
            f"not OpenAI's weights: OpenAI's {release} has the same hparams but {expected:,} bytes of "
            f"tensor data; this one has {found}"
        )
        return {"matches_openai": False, "release": release, "evidence": evidence}
    evidence = (
        f"consistent with OpenAI's {release}: the same hparams and {expected:,} bytes of tensor data "
        "(the values themselves are not checked: OpenAI publishes no hashes of them)"
    )
    return {"matches_openai": True, "release": release, "evidence": evidence}


# --------------------------------------------------------------------------- the lean loader


class _SkipValues(TorchFunctionMode):
    """Skip computing values that are discarded anyway while a model is built on the meta device.

    Weight init and the causal mask's ``triu`` are thrown away (the weights come
    from the file, the mask is rebuilt once), and on the meta device they run
    Python reference kernels whose first use imports ``torch._dynamo``: seconds
    and ~100 MB for nothing. Modes are thread-local, so this affects no other code.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        if func is torch.triu:
            return args[0]
        return func(*args, **kwargs)


def _check_state(file: Path, hparams: dict, model: GPTModel, state: dict) -> None:
    """Raise unless ``state`` holds exactly the parameters ``model`` needs (all but the tied head)."""
    expected = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if k != "out_head.weight" and not k.endswith(".att.mask")
    }
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, hparams imply {s}"
        for k, s in expected.items()
        if k in state and tuple(state[k].shape) != s
    ]
    if problems:
        raise ValueError(
            f"{file} does not match its own hparams {hparams}: {'; '.join(problems[:8])}. "
            "Convert the checkpoint again"
        )


def load_gpt2(
    path, *, device=None, drop_rate: float = 0.0, dtype: torch.dtype | None = None, verify: bool = True
) -> GPTModel:
    """The ``GPTModel`` of a converted GPT-2 (folder or ``model.safetensors``), in eval mode.

    ``verify`` first checks the tensor data against the SHA-256 in the file's
    header (:func:`verify_gpt2_file`: one read of the file, about a second per
    GB) and raises ``ValueError`` if it is damaged; a file without a digest
    (format_version 1) loads with a warning.

    The model is created on the meta device and given the memory-mapped
    tensors with ``assign=True``: the weights are read from disk on first use
    and exist once in memory. ``out_head`` shares ``tok_emb``'s weight (as in
    GPT-2); all blocks share one causal mask. The config comes from the file's
    hparams (``context_length=n_ctx``, ``qkv_bias=True``).
    """
    file = gpt2_file(path)
    if verify:
        digest, line = _data_digest(file)
        if digest is None:
            warnings.warn(f"{file}: {line}", stacklevel=2)
    hparams = read_gpt2_hparams(file)
    cfg = gpt2_model_config(hparams, drop_rate=drop_rate)
    with torch.device("meta"), _SkipValues():
        model = GPTModel(cfg)
    state = load_file(str(file))  # memory-mapped, no copy
    _check_state(file, hparams, model, state)
    mask = torch.triu(torch.ones(cfg["context_length"], cfg["context_length"]), diagonal=1)
    for i in range(cfg["n_layers"]):
        state[f"trf_blocks.{i}.att.mask"] = mask  # never modified in place, so one copy serves all
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys != ["out_head.weight"] or result.unexpected_keys:  # checked above; keep it so
        raise RuntimeError(f"{file}: unexpected state-dict mismatch {result}")
    model.out_head.weight = model.tok_emb.weight  # weight tying, as in OpenAI's GPT-2
    if dtype is not None:
        model.to(dtype)
    if device is not None:
        model.to(device)
    return model.eval()


# --------------------------------------------------------------------------- the book's API


def download_and_load_gpt2(model_size: str, models_dir, **download_kwargs) -> tuple[dict, dict]:
    """The book's function: download into ``models_dir/<model_size>`` and return ``(settings, params)``.

    ``settings`` is ``hparams.json``; ``params`` the book's nested NumPy dict
    (needs TensorFlow). Keyword arguments go to :func:`~gptlab.gpt2.download_gpt2`.
    """
    model_dir = download_gpt2(model_size, Path(models_dir) / model_size, **download_kwargs)
    settings = json.loads((model_dir / "hparams.json").read_text(encoding="utf-8"))
    return settings, load_gpt2_params_from_tf_ckpt(model_dir, settings)


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


def _load_block(blk, block: dict, b: int) -> None:
    """One transformer block of the book's ``params`` into ``trf_blocks[b]``."""
    c_attn = block["attn"]["c_attn"]
    for j, name in enumerate(QKV):
        lin = getattr(blk.att, name)
        _assign(lin, "weight", np.split(c_attn["w"], 3, axis=-1)[j].T, f"trf_blocks.{b}.att.{name}.weight")
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
        _load_block(gpt.trf_blocks[b], block, b)
    _assign(gpt.final_norm, "scale", params["g"], "final_norm.scale (ln_f/g)")
    _assign(gpt.final_norm, "shift", params["b"], "final_norm.shift (ln_f/b)")
    _assign(gpt.out_head, "weight", params["wte"], "out_head.weight (wte)")
