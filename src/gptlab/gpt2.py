"""OpenAI's pretrained GPT-2 weights: download, verify, load (book section 5.5).

Two ways in:

* the book's API, so the book's code runs against gptlab:
  ``settings, params = download_and_load_gpt2("124M", "gpt2")``, then
  ``load_weights_into_gpt(GPTModel(gpt2_model_config(settings)), params)``;
* the lean path the pipeline uses: :func:`download_gpt2` into a folder,
  ``gptlab.convert.convert_tf_checkpoint`` once, then :func:`load_gpt2`, which
  memory-maps ``model.safetensors`` into a model built on the meta device (no
  random init, no second copy of the weights) and needs no TensorFlow.

A folder of one release looks like this::

    <size>/checkpoint, encoder.json, hparams.json, model.ckpt.{data-00000-of-00001,index,meta}, vocab.bpe
    <size>/manifest.json       size, sha256, source URL and how each file above was verified
    <size>/model.safetensors   the converted weights, with the SHA-256 of their data

Each downloaded file's content is checked before its sha256 is pinned in the
manifest (:data:`CHECKS`): OpenAI's tokenizer files against their known hashes,
``hparams.json`` and ``checkpoint`` by parsing, the checkpoint's index by its
block checksums and its variables' shapes, the data file by every tensor's
crc32c. Only ``model.ckpt.meta``, which nothing reads, is trusted on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import warnings
from pathlib import Path, PurePath

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from . import tf_bundle
from .convert import DIGEST_KEY, FORMAT, SAFETENSORS, read_hparams
from .download import DownloadError, download_file
from .gpt2_params import (
    check_hparams,
    check_tf_layout,
    gpt2_model_config,
    load_gpt2_params_from_tf_ckpt,
    load_weights_into_gpt,
    tf_variable_shapes,
)
from .io import sha256_file, write_json
from .model import GPTModel
from .tokenizer import ENCODER_JSON_SHA256, VOCAB_BPE_SHA256

SIZES = ("124M", "355M", "774M", "1558M")
BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
BACKUP_BASE_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"  # the book's mirror
FILENAMES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
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
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "gptlab-gpt2-manifest"
DATA = "model.ckpt.data-00000-of-00001"
# Every GPT-2 release ships the same tokenizer files.
KNOWN_SHA256 = {"encoder.json": ENCODER_JSON_SHA256, "vocab.bpe": VOCAB_BPE_SHA256}
TRUSTED = "trusted on first use"
# How each file's content is checked before it is pinned (recorded as "verified" in the manifest).
CHECKS = {
    "checkpoint": "parsed, names model.ckpt",
    "encoder.json": "known sha256",
    "hparams.json": "parsed",  # "known hparams" when checked against OpenAI's values
    "model.ckpt.index": "tensor-bundle block crc32c, float32 dtypes, shapes of hparams.json",
    DATA: "tensor-bundle crc32c of every tensor, size",
    "model.ckpt.meta": TRUSTED,
    "vocab.bpe": "known sha256",
}
# Each file can be checked as soon as it lands: the index needs hparams.json, the data file the index.
DOWNLOAD_ORDER = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.index",
    DATA,
    "model.ckpt.meta",
    "vocab.bpe",
)

__all__ = [
    "BACKUP_BASE_URL",
    "BASE_URL",
    "FILENAMES",
    "GPT2_HPARAMS",
    "SIZES",
    "DownloadError",
    "download_and_load_gpt2",
    "download_gpt2",
    "gpt2_model_config",
    "load_gpt2",
    "load_gpt2_params_from_tf_ckpt",
    "load_weights_into_gpt",
    "read_manifest",
    "unpin_damaged_file",
    "verify_gpt2_file",
    "verify_release_file",
]


def _check_size(model_size: str) -> None:
    if model_size not in SIZES:
        raise ValueError(f"model_size={model_size!r} is not a GPT-2 release; choose one of {SIZES}")


def gpt2_urls(model_size: str, filename: str, base_urls) -> list[str]:
    """``<base>/<size>/<file>`` for each base URL (https://, http:// or file://), in order."""
    return [f"{str(base).rstrip('/')}/{model_size}/{filename}" for base in base_urls if base]


def read_manifest(model_dir) -> dict | None:
    """The folder's ``manifest.json`` as a dict, ``None`` when there is none; raise if it is unusable."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to re-verify from scratch") from err
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path} is not a gptlab GPT-2 manifest; delete it to re-verify from scratch")
    return manifest


def _write_manifest(model_dir: Path, model_size: str, files: dict) -> None:
    files = {name: files[name] for name in FILENAMES if name in files}
    write_json({"format": MANIFEST_FORMAT, "model_size": model_size, "files": files}, model_dir / MANIFEST)


_CHECKPOINT_STATE = re.compile(
    r'(?P<key>model_checkpoint_path|all_model_checkpoint_paths): "(?P<path>[^"\\]*)"'
    r"|(all_model_checkpoint_timestamps|last_preserved_timestamp): [0-9.eE+-]+"
)


def _check_checkpoint_state(path: Path) -> None:
    """TensorFlow's text ``checkpoint`` file: known lines only, every path naming ``model.ckpt``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"not text: byte {err.start} is not UTF-8") from None
    paths = {}
    for line in text.splitlines():
        match = _CHECKPOINT_STATE.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"line {line!r} is not part of a TensorFlow checkpoint state")
        if match["key"]:
            paths.setdefault(match["key"], []).append(match["path"])
    if "model_checkpoint_path" not in paths:
        raise ValueError("no model_checkpoint_path line")
    other = [p for ps in paths.values() for p in ps if PurePath(p).name != "model.ckpt"]
    if other:
        raise ValueError(f"names {other[0]!r}; GPT-2 releases name model.ckpt")


def verify_release_file(model_dir, name: str, *, model_size: str | None = None) -> str:
    """Check the content of file ``name`` of the release in ``model_dir``; return how (:data:`CHECKS`).

    Raises ``ValueError`` saying what failed. With ``model_size``,
    ``hparams.json`` must hold OpenAI's values for that size. The index is
    checked against ``hparams.json`` and the data file against the index, so
    check them in :data:`DOWNLOAD_ORDER`. Needs no TensorFlow.
    """
    folder = Path(model_dir)
    path = folder / name
    if name in KNOWN_SHA256:
        sha = sha256_file(path)
        if sha != KNOWN_SHA256[name]:
            raise ValueError(f"sha256 {sha} is not that of OpenAI's GPT-2 {name} ({KNOWN_SHA256[name]})")
    elif name == "hparams.json":
        hparams = read_hparams(path)
        if model_size is not None:
            if hparams != GPT2_HPARAMS[model_size]:
                raise ValueError(f"holds {hparams}; OpenAI's {model_size} has {GPT2_HPARAMS[model_size]}")
            return "known hparams"
    elif name == "checkpoint":
        _check_checkpoint_state(path)
    elif name == "model.ckpt.index":
        header, entries = tf_bundle.read_index(path)
        tf_bundle.check_float32(path, entries.values())
        if header["num_shards"] != 1:
            raise ValueError(f"{header['num_shards']} data shards; GPT-2 releases have one")
        shapes = tf_variable_shapes(read_hparams(folder / "hparams.json"))
        check_tf_layout({n: e.shape for n, e in entries.items()}, shapes, str(path))
    elif name == DATA:
        _, entries = tf_bundle.read_index(folder / "model.ckpt.index")
        tf_bundle.check_data(path, entries.values())
    elif name not in CHECKS:
        raise ValueError(f"{name} is not a file of a GPT-2 release; those are {FILENAMES}")
    return CHECKS[name]


def _set_aside(path: Path) -> Path:
    bad = path.with_name(path.name + ".bad")
    if path.exists():
        os.replace(path, bad)
    return bad


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def download_gpt2(
    model_size: str,
    model_dir,
    *,
    base_url: str = BASE_URL,
    backup_base_url: str | None = BACKUP_BASE_URL,
    check_known_sizes: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    mirror_option: str = "base_url / backup_base_url",
) -> Path:
    """Fetch the seven files of GPT-2 ``model_size`` into ``model_dir``, verified; return ``model_dir``.

    Each file's content is checked (:func:`verify_release_file`) before its
    size, sha256, source URL and the checks it passed are pinned in
    ``manifest.json``; a file that fails is moved aside to ``<file>.bad``,
    never pinned, and the ``DownloadError`` names it and the check (running
    the download again fetches it anew). Files already present are checked
    against the manifest (sha256) and fetched again only if they fail; files
    without a verified pin are checked by content, and fetched again if they
    fail. ``check_known_sizes`` also checks OpenAI's known file sizes (124M,
    355M) and ``hparams.json`` values; turn it off for mirrors holding other
    files, such as synthetic test checkpoints. ``mirror_option`` names, in the
    errors, where the caller sets the mirrors (a config key, a command-line option).
    """
    _check_size(model_size)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(model_dir)
    if manifest is not None and manifest.get("model_size") != model_size:
        raise ValueError(
            f"{model_dir / MANIFEST} is for GPT-2 {manifest.get('model_size')}, not {model_size}: "
            "use one folder per size"
        )
    pinned = manifest["files"] if manifest else {}
    known = KNOWN_FILE_SIZES.get(model_size, {}) if check_known_sizes else {}
    remedy = (
        f"set {mirror_option} to a reachable mirror (https://, http:// or file:// of a folder "
        f"holding {model_size}/<file>), or copy the files {', '.join(FILENAMES)} of the {model_size} "
        f"release into {model_dir} yourself"
        + (f"; {MANIFEST} there pins their sha256 (delete it to accept other files)" if pinned else "")
    )
    files = dict(pinned)
    for name in DOWNLOAD_ORDER:
        path = model_dir / name
        entry = pinned.get(name, {})
        if name in KNOWN_SHA256 and entry.get("sha256") != KNOWN_SHA256[name]:
            entry = {}  # the known hash decides, whatever an older manifest pinned
        for attempt in (1, 2):
            result = download_file(
                gpt2_urls(model_size, name, (base_url, backup_base_url)),
                path,
                expected_size=entry.get("size", known.get(name)),
                expected_sha256=KNOWN_SHA256.get(name) or entry.get("sha256"),
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                progress=progress,
                remedy=remedy,
            )
            if result.url is None and entry.get("verified") and entry.get("sha256") == result.sha256:
                how = entry["verified"]  # checked when pinned, unchanged since
                break
            try:
                how = verify_release_file(
                    model_dir, name, model_size=model_size if check_known_sizes else None
                )
                break
            except ValueError as err:
                reason = err.reason if isinstance(err, tf_bundle.BundleError) and err.path == path else err
                bad = _set_aside(path)
                if files.pop(name, None) is not None:
                    _write_manifest(model_dir, model_size, files)
                if result.url is None and attempt == 1:  # here before (copied, or pinned unchecked)
                    _log(f"{path} fails its check ({CHECKS[name]}): {reason}; moved to {bad}, fetching again")
                    entry = {}
                    continue
                raise DownloadError(
                    f"{name} downloaded from {result.url} fails its check ({CHECKS[name]}): {reason}. "
                    f"It was not pinned in {MANIFEST} and was moved to {bad}. Run the download again to "
                    f"fetch it anew; if it fails again, the mirror serves a damaged or another file: {remedy}"
                ) from err
        record = {"size": result.size, "sha256": result.sha256, "url": result.url or entry.get("url")}
        record["verified"] = how
        if record != entry:  # pin each file as soon as it is verified, so a failed run keeps its progress
            files[name] = record
            _write_manifest(model_dir, model_size, files)
    read_hparams(model_dir / "hparams.json")
    return model_dir


def _guess_size(folder: Path) -> str | None:
    try:
        manifest = read_manifest(folder)
        if manifest and manifest.get("model_size") in SIZES:
            return manifest["model_size"]
        hparams = read_hparams(folder / "hparams.json")
    except (OSError, ValueError):
        return None
    return next((size for size, hp in GPT2_HPARAMS.items() if hp == hparams), None)


def unpin_damaged_file(path, reason: str) -> str:
    """Move a damaged (or note a missing) file of a downloaded release aside and un-pin it; return a message.

    The file goes to ``<file>.bad`` and the folder's whole ``manifest.json`` is
    removed: the next :func:`download_gpt2` fetches the file again and
    re-checks the files still there by content. (Removing the manifest, not
    just the file's entry, is what makes the pipeline's download rule, whose
    output is the manifest, run again.) The message says what to run next.
    """
    path = Path(path)
    folder = path.parent
    size = _guess_size(folder)
    if path.exists():
        what = f"{path} is damaged: {reason}. It was moved to {_set_aside(path)}"
    else:
        what = f"{path} is missing. Nothing was moved"
    manifest = folder / MANIFEST
    if manifest.exists():
        manifest.unlink()
        what += f" and {manifest} removed"
    size_arg = size or "SIZE"
    return (
        f"{what}, so that the next download fetches "
        f"it again and re-verifies the other files. Next: run the download again, then convert; in the "
        f"pipeline, run snakemake again; on the command line, gptlab download --size {size_arg} "
        f"--dir {folder} (with the --mirror options used before), then gptlab convert {folder}; in Python, "
        f"gptlab.gpt2.download_gpt2({size_arg!r}, {str(folder)!r}), then convert_tf_checkpoint again"
    )


def download_and_load_gpt2(model_size: str, models_dir, **download_kwargs) -> tuple[dict, dict]:
    """The book's function: download into ``models_dir/<model_size>`` and return ``(settings, params)``.

    ``settings`` is ``hparams.json``; ``params`` the book's nested NumPy dict
    (needs TensorFlow). Keyword arguments go to :func:`download_gpt2`.
    """
    model_dir = download_gpt2(model_size, Path(models_dir) / model_size, **download_kwargs)
    settings = json.loads((model_dir / "hparams.json").read_text(encoding="utf-8"))
    return settings, load_gpt2_params_from_tf_ckpt(model_dir, settings)


def _safetensors_file(path) -> Path:
    path = Path(path)
    if path.is_dir():
        file = path / SAFETENSORS
        if not file.is_file():
            hint = (
                f"convert it first: gptlab.convert.convert_tf_checkpoint({str(path)!r})"
                if (path / "model.ckpt.index").is_file()
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


def read_gpt2_hparams(path) -> dict:
    """The hparams stored in a converted file (or folder), without reading any weights."""
    file = _safetensors_file(path)
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT or "hparams" not in meta:
        raise ValueError(
            f"{file} is not a gptlab GPT-2 file (metadata format={meta.get('format')!r}); "
            "create it with gptlab.convert.convert_tf_checkpoint"
        )
    return check_hparams(json.loads(meta["hparams"]))


def _reconvert_hint(file: Path) -> str:
    src = next((d for d in (file.parent / "tf", file.parent) if (d / "model.ckpt.index").is_file()), None)
    command = f"gptlab convert {src or 'DIR'} --out {file}"
    return (
        f"Convert the checkpoint again ({command}, or gptlab.convert.convert_tf_checkpoint); "
        f"in the pipeline, move it aside (mv {file} {file}.damaged) and run snakemake again"
    )


def _data_digest(file: Path) -> tuple[str | None, str]:
    """``(sha256 recorded in the header or None, one-line result)``; raise ``ValueError`` if damaged.

    Reads the file once, in 1 MiB chunks (no copy of the weights in memory).
    """
    size = file.stat().st_size
    with open(file, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < n <= min(size - 8, 100 << 20):
            raise ValueError(f"{file} is not a safetensors file (header length {n}). {_reconvert_hint(file)}")
        try:
            header = json.loads(f.read(n))
        except ValueError as err:
            raise ValueError(
                f"{file} is damaged: its header is not JSON ({err}). {_reconvert_hint(file)}"
            ) from None
        meta = header.pop("__metadata__", None) or {}
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{file} is not a gptlab GPT-2 file (metadata format={meta.get('format')!r}); "
                "create it with gptlab.convert.convert_tf_checkpoint"
            )
        try:
            n_data = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        except (KeyError, IndexError, TypeError, ValueError):
            raise ValueError(
                f"{file} is damaged: its header lists no valid offsets. {_reconvert_hint(file)}"
            ) from None
        if size - 8 - n != n_data:
            state = "truncated" if size - 8 - n < n_data else "has extra bytes"
            raise ValueError(
                f"{file} is damaged ({state}): {size - 8 - n:,} bytes of tensor data, its header describes "
                f"{n_data:,}. {_reconvert_hint(file)}"
            )
        expected = meta.get(DIGEST_KEY)
        if expected is None:
            if meta.get("format_version") == "1":
                return None, (
                    f"no digest of the tensor data (format_version 1, written before digests were stored): "
                    f"its {n_data:,} bytes were not verified; convert it again to enable verification"
                )
            raise ValueError(f"{file} is damaged: its header lacks {DIGEST_KEY}. {_reconvert_hint(file)}")
        digest = hashlib.sha256()
        buf = memoryview(bytearray(1 << 20))
        while got := f.readinto(buf):
            digest.update(buf[:got])
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{file} is damaged: the SHA-256 of its {n_data:,} bytes of tensor data is {digest.hexdigest()}, "
            f"its header records {expected}. {_reconvert_hint(file)}"
        )
    return expected, f"the SHA-256 of the {n_data:,} bytes of tensor data matches the digest in the header"


def verify_gpt2_file(path) -> str:
    """Check a converted GPT-2 (folder or ``model.safetensors``) against the digest in its header.

    Returns one line (without the file's name) saying what was verified. Raises ``ValueError`` naming the
    file and saying to convert again when the tensor data does not match its
    SHA-256, the file is truncated, or its header is damaged. A file of
    format_version 1 holds no digest: the line says so, nothing is raised.
    """
    return _data_digest(_safetensors_file(path))[1]


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
    file = _safetensors_file(path)
    if verify:
        digest, line = _data_digest(file)
        if digest is None:
            warnings.warn(f"{file}: {line}", stacklevel=2)
    hparams = read_gpt2_hparams(file)
    cfg = gpt2_model_config(hparams, drop_rate=drop_rate)
    with torch.device("meta"), _SkipValues():
        model = GPTModel(cfg)
    expected = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if k != "out_head.weight" and not k.endswith(".att.mask")
    }
    state = load_file(str(file))  # memory-mapped, no copy
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
