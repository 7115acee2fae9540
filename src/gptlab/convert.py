"""OpenAI's TensorFlow GPT-2 checkpoint -> one safetensors file, streamed.

This is the only module that imports TensorFlow, and only inside functions:
loading, evaluation and everything else run without it.

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

from . import tf_bundle
from .gpt2_params import (
    check_hparams,
    check_tf_layout,
    state_dict_targets,
    tf_variable_shapes,
    transform,
    transformed_shape,
)
from .io import atomic_open

FORMAT = "gptlab-gpt2"
# 2: the metadata holds DIGEST_KEY, the SHA-256 of the tensor data (everything after the header).
FORMAT_VERSION = "2"
SAFETENSORS = "model.safetensors"
DIGEST_KEY = "data_sha256"
_PLACEHOLDER = "0" * 64


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


def read_hparams(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: every GPT-2 release ships an hparams.json")
    try:
        return check_hparams(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-download it") from err


def _unpin(path, reason: str) -> str:
    """Un-pin a damaged (or missing) download (gptlab.gpt2.unpin_damaged_file); the message says what next."""
    from .gpt2 import unpin_damaged_file  # gpt2 imports this module

    return unpin_damaged_file(path, reason)


def _check_tf_files(prefix, hparams: dict) -> tuple[dict, Path]:
    """Check a checkpoint's index and data size without TensorFlow; return ``(entries, data file)``.

    Damage (a block checksum, a truncated data file) un-pins the file and raises
    a ``ValueError`` saying how to fetch it again; variables that do not fit
    ``hparams`` raise a ``ValueError`` listing them.
    """
    index = Path(f"{prefix}.index")
    try:
        header, entries = tf_bundle.read_index(index)
        tf_bundle.check_float32(index, entries.values())
    except tf_bundle.BundleError as err:
        raise ValueError(_unpin(err.path, err.reason)) from err
    check_tf_layout(
        {n: e.shape for n, e in entries.items()}, tf_variable_shapes(hparams), f"checkpoint {prefix}"
    )
    if header["num_shards"] != 1:
        raise ValueError(
            f"checkpoint {prefix} has {header['num_shards']} data shards; GPT-2 releases have one"
        )
    data = tf_bundle.data_file(prefix)
    if not data.is_file():
        raise FileNotFoundError(_unpin(data, "missing"))
    try:
        tf_bundle.check_data_size(data, entries.values())
    except tf_bundle.BundleError as err:
        raise ValueError(_unpin(err.path, err.reason)) from err
    return entries, data


def _header(hparams: dict, expected: dict) -> tuple[dict, bytes, int]:
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
    marker = f'"{DIGEST_KEY}":"'.encode()
    return header, blob, 8 + blob.index(marker + _PLACEHOLDER.encode()) + len(marker)


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
    tf = _tf()
    if Path(src, "manifest.json").is_file():  # a downloaded release: a missing file is fetched again
        for name in ("hparams.json", "model.ckpt.index"):
            if not Path(src, name).is_file():
                raise FileNotFoundError(_unpin(Path(src, name), "missing"))
    prefix = find_tf_checkpoint(src)
    folder = Path(prefix).parent
    try:
        hparams = read_hparams(hparams_path or folder / "hparams.json")
    except ValueError as err:
        if hparams_path is None and isinstance(err.__cause__, ValueError):  # bytes that are not JSON
            raise ValueError(_unpin(folder / "hparams.json", f"not valid JSON ({err.__cause__})")) from err
        raise
    dest = Path(dest) if dest is not None else folder / SAFETENSORS
    expected = tf_variable_shapes(hparams)
    entries, data = _check_tf_files(prefix, hparams)

    reader = tf.train.load_checkpoint(prefix)
    header, blob, digest_at = _header(hparams, expected)
    names = list(expected)
    if progress:
        from tqdm import tqdm

        names = tqdm(names, desc=f"convert {dest.name}", unit="var", file=sys.stderr)
    try:
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
    except tf.errors.OpError as err:
        # TensorFlow found a tensor whose bytes fail their crc32c ("Checksum does not match"):
        # find the damaged file with the same check, so that it can be fetched again.
        try:
            tf_bundle.check_data(data, entries.values())
        except tf_bundle.BundleError as damage:
            raise ValueError(_unpin(damage.path, damage.reason)) from err
        raise
    return dest
