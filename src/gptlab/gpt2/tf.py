"""OpenAI's TensorFlow GPT-2 checkpoint -> one safetensors file, streamed; the book's TF reader.

This is the only module that imports TensorFlow, and only inside functions
(:func:`import_tensorflow`): loading, evaluation and everything else run
without it.

The safetensors file holds the tensors already in ``GPTModel`` layout (the
book's parameter names, ``nn.Linear``'s ``[d_out, d_in]``, query/key/value
split), so loading is a memory map with no copy. ``out_head.weight`` is not
stored: GPT-2 ties it to ``tok_emb.weight``. OpenAI's ``hparams.json`` travels
in the file's metadata. Since every shape follows from the hparams, the header
is written first and the checkpoint is then read and written one variable at
a time: the whole model is never held in memory, not even once. The SHA-256
of the tensor data is computed on the way and written into a fixed-length
placeholder of the header at the end, so loading can detect damage.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..io import atomic_open
from . import bundle
from .fetch import unpin_damaged_file
from .layout import (
    DIGEST_KEY,
    FORMAT,
    FORMAT_VERSION,
    HPARAMS,
    INDEX,
    MANIFEST,
    SAFETENSORS,
    check_hparams,
    check_tf_layout,
    read_hparams,
    state_dict_targets,
    tf_variable_shapes,
    transform,
    transformed_shape,
)

__all__ = [
    "convert_tf_checkpoint",
    "find_tf_checkpoint",
    "import_tensorflow",
    "iter_tf_variables",
    "load_gpt2_params_from_tf_ckpt",
]

_PLACEHOLDER = "0" * 64


def import_tensorflow():
    """The ``tensorflow`` module; an ``ImportError`` saying how to install it when it is missing."""
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
            prefix = import_tensorflow().train.latest_checkpoint(str(path))
            if prefix and Path(prefix + ".index").is_file():
                return prefix
        if (path / INDEX).is_file():
            return str(path / "model.ckpt")
        raise FileNotFoundError(
            f"{path} holds no TensorFlow checkpoint (no 'checkpoint' file naming one, no {INDEX}); "
            "download the GPT-2 release into it first (gptlab.gpt2.download_gpt2)"
        )
    if Path(str(path) + ".index").is_file():
        return str(path)
    raise FileNotFoundError(
        f"{path} is neither a checkpoint folder nor a checkpoint prefix with a .index file"
    )


def iter_tf_variables(ckpt_path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, array)`` for every variable, sorted by name, one at a time."""
    reader = import_tensorflow().train.load_checkpoint(find_tf_checkpoint(ckpt_path))
    for name in sorted(reader.get_variable_to_shape_map()):
        yield name, reader.get_tensor(name)


# --------------------------------------------------------------------------- conversion


def convert_tf_checkpoint(src, dest=None, *, hparams_path=None, progress: bool = False) -> Path:
    """Convert the checkpoint in ``src`` (folder or prefix) to safetensors ``dest``.

    ``dest`` defaults to ``model.safetensors`` beside the checkpoint.
    ``hparams_path`` defaults to ``hparams.json`` beside the checkpoint.

    The index is checked first (block checksums, dtypes, shapes against the
    hparams, the data file's size), and TensorFlow checks every tensor's
    crc32c as it reads it. A damaged file is moved aside to ``<file>.bad`` and
    the folder's ``manifest.json`` removed, so that the next ``download_gpt2``
    fetches it again; the ``ValueError`` says what to run. The file appears
    under ``dest`` only once completely written, with the SHA-256 of its
    tensor data in its metadata. Returns ``dest``.
    """
    tf = import_tensorflow()
    prefix, hparams = _source(src, hparams_path)
    dest = Path(dest) if dest is not None else Path(prefix).parent / SAFETENSORS
    entries, data = _check_tf_files(prefix, hparams)
    reader = tf.train.load_checkpoint(prefix)
    try:
        _write_safetensors(dest, reader, hparams, progress)
    except tf.errors.OpError as err:
        # TensorFlow found a tensor whose bytes fail their crc32c ("Checksum does not match"):
        # find the damaged file with the same check, so that it can be fetched again.
        try:
            bundle.check_data(data, entries.values())
        except bundle.BundleError as damage:
            raise ValueError(unpin_damaged_file(damage.path, damage.reason)) from err
        raise
    return dest


def _source(src, hparams_path) -> tuple[str, dict]:
    """The checkpoint prefix of ``src`` and its hparams.

    In a downloaded release, a missing file or an ``hparams.json`` that is not
    JSON is un-pinned (:func:`~gptlab.gpt2.fetch.unpin_damaged_file`), so that
    the next download fetches it again; the error says so.
    """
    if Path(src, MANIFEST).is_file():  # a downloaded release: a missing file is fetched again
        for name in (HPARAMS, INDEX):
            if not Path(src, name).is_file():
                raise FileNotFoundError(unpin_damaged_file(Path(src, name), "missing"))
    prefix = find_tf_checkpoint(src)
    folder = Path(prefix).parent
    try:
        return prefix, read_hparams(hparams_path or folder / HPARAMS)
    except ValueError as err:
        if hparams_path is None and isinstance(err.__cause__, ValueError):  # bytes that are not JSON
            reason = f"not valid JSON ({err.__cause__})"
            raise ValueError(unpin_damaged_file(folder / HPARAMS, reason)) from err
        raise


def _check_tf_files(prefix, hparams: dict) -> tuple[dict, Path]:
    """Check a checkpoint's index and data size without TensorFlow; return ``(entries, data file)``.

    Damage (a block checksum, a truncated data file) un-pins the file and raises
    a ``ValueError`` saying how to fetch it again; variables that do not fit
    ``hparams`` raise a ``ValueError`` listing them.
    """
    index = Path(f"{prefix}.index")
    try:
        header, entries = bundle.read_index(index)
        bundle.check_float32(index, entries.values())
    except bundle.BundleError as err:
        raise ValueError(unpin_damaged_file(err.path, err.reason)) from err
    check_tf_layout(
        {n: e.shape for n, e in entries.items()}, tf_variable_shapes(hparams), f"checkpoint {prefix}"
    )
    if header["num_shards"] != 1:
        raise ValueError(
            f"checkpoint {prefix} has {header['num_shards']} data shards; GPT-2 releases have one"
        )
    data = bundle.data_file(prefix)
    if not data.is_file():
        raise FileNotFoundError(unpin_damaged_file(data, "missing"))
    try:
        bundle.check_data_size(data, entries.values())
    except bundle.BundleError as err:
        raise ValueError(unpin_damaged_file(err.path, err.reason)) from err
    return entries, data


def _header(hparams: dict) -> tuple[dict, bytes, int]:
    """The safetensors header (offsets follow from the shapes), its bytes, and where the digest goes."""
    header: dict = {
        "__metadata__": {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hparams": json.dumps(hparams),
            "tied": "out_head.weight=tok_emb.weight",
            DIGEST_KEY: _PLACEHOLDER,
        }
    }
    offset = 0
    for name, shape in tf_variable_shapes(hparams).items():
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
    marker = f'"{DIGEST_KEY}":"'.encode()
    return header, blob, 8 + blob.index(marker + _PLACEHOLDER.encode()) + len(marker)


def _write_safetensors(dest: Path, reader, hparams: dict, progress: bool) -> None:
    """Write the header, then every variable in turn (read, transformed, hashed, written), then the digest."""
    header, blob, digest_at = _header(hparams)
    names = list(tf_variable_shapes(hparams))
    if progress:
        from tqdm import tqdm

        names = tqdm(names, desc=f"convert {dest.name}", unit="var", file=sys.stderr)
    with atomic_open(dest, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        digest = hashlib.sha256()
        written = 0
        for name in names:
            array = reader.get_tensor(name)  # the only copy of this variable in memory
            for key, kind in state_dict_targets(name):
                out = np.ascontiguousarray(transform(kind, array), dtype="<f4")
                start, end = header[key]["data_offsets"]
                if written != start or out.nbytes != end - start:  # pragma: no cover - internal check
                    raise AssertionError(f"{key}: writing at {written}, header says {start}..{end}")
                view = memoryview(out).cast("B")
                f.write(view)
                digest.update(view)
                written += out.nbytes
            del array
        # The digest has a fixed length: filling in the placeholder moves no offset.
        f.seek(digest_at)
        f.write(digest.hexdigest().encode())


# --------------------------------------------------------------------------- the book's API


def load_gpt2_params_from_tf_ckpt(ckpt_path, settings: dict) -> dict:
    """The book's nested ``params`` dict (``wte, wpe, g, b, blocks[i][...]``) from a TF checkpoint.

    ``ckpt_path`` is a checkpoint prefix (``.../model.ckpt``) or its folder.
    Needs TensorFlow (``pip install 'gptlab[convert]'``).
    """
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
