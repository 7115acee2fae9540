"""OpenAI's TensorFlow GPT-2 checkpoint -> one safetensors file, streamed.

This is the only module that imports TensorFlow, and only inside functions:
loading, evaluation and everything else run without it.

The safetensors file holds the tensors already in ``GPTModel`` layout (the
book's parameter names, ``nn.Linear``'s ``[d_out, d_in]``, query/key/value
split), so loading is a memory map with no copy. ``out_head.weight`` is not
stored: GPT-2 ties it to ``tok_emb.weight``. OpenAI's ``hparams.json`` travels
in the file's metadata. Since every shape follows from the hparams, the header
is written first and the checkpoint is then read and written one variable at
a time: the whole model is never held in memory, not even once.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .gpt2_params import (
    check_hparams,
    state_dict_targets,
    tf_variable_shapes,
    transform,
    transformed_shape,
)

FORMAT = "gptlab-gpt2"
FORMAT_VERSION = "1"
SAFETENSORS = "model.safetensors"


def _tf():
    try:
        import tensorflow as tf
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading OpenAI's TensorFlow checkpoints needs TensorFlow: pip install 'gptlab[convert]' "
            "(tensorflow-cpu); loading a converted model.safetensors does not"
        ) from err
    return tf


def find_tf_checkpoint(path) -> str:
    """The checkpoint prefix (``.../model.ckpt``) for a folder or a prefix; raise if there is none."""
    path = Path(path)
    if path.is_dir():
        marker = path / "checkpoint"
        if marker.is_file():
            prefix = _tf().train.latest_checkpoint(str(path))
            if prefix and Path(prefix + ".index").is_file():
                return prefix
        if (path / "model.ckpt.index").is_file():
            return str(path / "model.ckpt")
        raise FileNotFoundError(
            f"{path} holds no TensorFlow checkpoint (no 'checkpoint' file naming one, no model.ckpt.index); "
            "download the GPT-2 release into it first (gptlab.gpt2.download_gpt2)"
        )
    if Path(str(path) + ".index").is_file():
        return str(path)
    raise FileNotFoundError(
        f"{path} is neither a checkpoint folder nor a checkpoint prefix with a .index file"
    )


def iter_tf_variables(ckpt_path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, array)`` for every variable, sorted by name, one at a time."""
    reader = _tf().train.load_checkpoint(find_tf_checkpoint(ckpt_path))
    for name in sorted(reader.get_variable_to_shape_map()):
        yield name, reader.get_tensor(name)


def _check_layout(found: dict, expected: dict, where: str) -> None:
    """Raise naming every missing, unexpected or mis-shaped variable."""
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


def read_hparams(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: every GPT-2 release ships an hparams.json")
    try:
        return check_hparams(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-download it") from err


def convert_tf_checkpoint(src, dest=None, *, hparams_path=None, progress: bool = False) -> Path:
    """Convert the checkpoint in ``src`` (folder or prefix) to safetensors ``dest``.

    ``dest`` defaults to ``model.safetensors`` beside the checkpoint.

    ``hparams_path`` defaults to ``hparams.json`` beside the checkpoint. The
    file appears under ``dest`` only once completely written. Returns ``dest``.
    """
    tf = _tf()
    prefix = find_tf_checkpoint(src)
    folder = Path(prefix).parent
    hparams = read_hparams(hparams_path or folder / "hparams.json")
    dest = Path(dest) if dest is not None else folder / SAFETENSORS

    reader = tf.train.load_checkpoint(prefix)
    found = {n: tuple(s) for n, s in reader.get_variable_to_shape_map().items()}
    expected = tf_variable_shapes(hparams)
    _check_layout(found, expected, f"checkpoint {prefix}")
    dtypes = reader.get_variable_to_dtype_map()
    bad = {n: dt.name for n, dt in dtypes.items() if dt != tf.float32}
    if bad:
        raise ValueError(f"checkpoint {prefix} has non-float32 variables {bad}; GPT-2 releases are float32")

    # The header first: every offset follows from the shapes.
    header: dict = {
        "__metadata__": {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hparams": json.dumps(hparams),
            "tied": "out_head.weight=tok_emb.weight",
        }
    }
    offset = 0
    for name, shape in expected.items():
        for key, kind in state_dict_targets(name):
            out_shape = transformed_shape(kind, shape)
            nbytes = 4 * int(np.prod(out_shape))
            header[key] = {
                "dtype": "F32",
                "shape": list(out_shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8 bytes

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            written = 0
            names = list(expected)
            if progress:
                from tqdm import tqdm

                names = tqdm(names, desc=f"convert {dest.name}", unit="var", file=sys.stderr)
            for name in names:
                array = reader.get_tensor(name)  # the only copy of this variable in memory
                for key, kind in state_dict_targets(name):
                    out = np.ascontiguousarray(transform(kind, array), dtype="<f4")
                    start, end = header[key]["data_offsets"]
                    if written != start or out.nbytes != end - start:  # pragma: no cover - internal check
                        raise AssertionError(f"{key}: writing at {written}, header says {start}..{end}")
                    f.write(memoryview(out).cast("B"))
                    written += out.nbytes
                del array
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
