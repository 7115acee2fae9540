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
    <size>/manifest.json       size, sha256 and source URL of each file above (verified on every run)
    <size>/model.safetensors   the converted weights
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from .convert import FORMAT, SAFETENSORS, read_hparams
from .download import DownloadError, download_file
from .gpt2_params import (
    check_hparams,
    gpt2_model_config,
    load_gpt2_params_from_tf_ckpt,
    load_weights_into_gpt,
)
from .model import GPTModel

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


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    Files already present are checked against ``manifest.json`` (sha256) and
    fetched again only if they fail. Without a manifest, the files of 124M and
    355M are checked against OpenAI's known sizes (``check_known_sizes=False``
    for mirrors holding other files, such as synthetic test checkpoints). Each
    file's size, sha256 and source URL go into the manifest once it is verified.
    ``mirror_option`` names, in the error raised when every URL fails, where
    the caller sets the mirrors (a config key, a command-line option).
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
    for name in FILENAMES:
        entry = pinned.get(name, {})
        result = download_file(
            gpt2_urls(model_size, name, (base_url, backup_base_url)),
            model_dir / name,
            expected_size=entry.get("size", known.get(name)),
            expected_sha256=entry.get("sha256"),
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            progress=progress,
            remedy=remedy,
        )
        record = {"size": result.size, "sha256": result.sha256, "url": result.url or entry.get("url")}
        if record != entry:  # pin each file as soon as it is verified, so a failed run keeps its progress
            files[name] = record
            _write_json(
                model_dir / MANIFEST, {"format": MANIFEST_FORMAT, "model_size": model_size, "files": files}
            )
    read_hparams(model_dir / "hparams.json")  # fail here, not later, on a broken hparams.json
    return model_dir


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


def load_gpt2(path, *, device=None, drop_rate: float = 0.0, dtype: torch.dtype | None = None) -> GPTModel:
    """The ``GPTModel`` of a converted GPT-2 (folder or ``model.safetensors``), in eval mode.

    The model is created on the meta device and given the memory-mapped
    tensors with ``assign=True``: the weights are read from disk on first use
    and exist once in memory. ``out_head`` shares ``tok_emb``'s weight (as in
    GPT-2); all blocks share one causal mask. The config comes from the file's
    hparams (``context_length=n_ctx``, ``qkv_bias=True``).
    """
    file = _safetensors_file(path)
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
