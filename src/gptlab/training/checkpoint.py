"""Checkpoints that resume training exactly (exercise 5.4, done thoroughly).

A gptlab checkpoint holds model and optimizer state, every RNG state (torch
CPU/CUDA, Python, NumPy), the training position (epoch, batch within the
epoch, the epoch's shuffle seed, global step, tokens seen), the loss history
and the model/training configuration. It is read with
``torch.load(weights_only=True)``: no arbitrary pickles are ever executed.

Integrity: the file carries a SHA-256 digest of its own content (every
tensor's dtype, shape and bytes, and every other value), computed when it is
written and checked whenever it is read. The digest travels inside the one
file, which is written under a temporary name and renamed into place
(``gptlab.io``): a reader sees the old checkpoint or the new one, each with
its own digest, so a kill or a concurrent reader never finds the two out of
step. A file damaged later (disk, copy) is refused, as is one that cannot be
read at all; neither is ever deleted for you.

The book's own ``model_and_optimizer.pth`` (``model_state_dict`` and
``optimizer_state_dict``) loads too; written by gptlab it carries the digest
as one extra key, which the book's loading code ignores.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_open, sha256_file
from ..model import GPTModel, validate_config

FORMAT = "gptlab-checkpoint"
VERSION = 2  # 2: digest inside the file; 1: SHA-256 sidecar file (still read)
DIGEST = "content_sha256"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def _feed(h, obj) -> None:
    """Hash ``obj`` (nested dicts/lists of tensors and plain values) independently of pickling."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            h.update(repr(key).encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):  # a tuple may come back as a list: hash them alike
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} in a checkpoint")


def content_digest(payload: dict) -> str:
    """The SHA-256 of a checkpoint's content (everything but the digest itself)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != DIGEST})
    return h.hexdigest()


def _legacy_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _save(path, payload: dict) -> Path:
    """Write ``payload`` with its digest, atomically; a full disk names the path."""
    path = Path(path)
    payload = {**payload, DIGEST: content_digest(payload)}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    _legacy_sidecar(path).unlink(missing_ok=True)  # a version-1 sidecar describes the old file
    return path


def capture_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch_cpu": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch_cpu"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def save_checkpoint(path, model, optimizer, train_state: dict, train_config: dict | None = None, **extra):
    """Write a resumable checkpoint of the training run to ``path``; return the path.

    ``extra`` adds top-level entries of plain values (e.g. the settings key
    of an intermediate checkpoint).
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dict(model.cfg),
        "train_config": dict(train_config or {}),
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "rng_state": capture_rng_state(),
        "train_state": train_state,
        **extra,
    }
    return _save(path, payload)


_SET_ASIDE = "move it aside (e.g. mv {p} {p}.damaged) and run the step again to recompute it"


def _read(path: Path, map_location) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged archives
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is truncated, "
            f"damaged, or not a PyTorch checkpoint: {_SET_ASIDE.format(p=path)}"
        ) from exc
    if isinstance(ckpt, dict) and DIGEST in ckpt:
        actual = content_digest(ckpt)
        if actual != ckpt[DIGEST]:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its content (sha256 {actual[:12]}…) differs from the "
                f"digest written with it ({str(ckpt[DIGEST])[:12]}…), so it changed on disk or in a "
                f"copy after it was saved. Restore an intact copy, or {_SET_ASIDE.format(p=path)}"
            )
    elif isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and _legacy_sidecar(path).is_file():
        expected = _legacy_sidecar(path).read_text().split()[0]
        if sha256_file(path) != expected:
            raise CheckpointError(
                f"checkpoint {path} does not match its sha256 sidecar {_legacy_sidecar(path).name} "
                f"(format version 1); restore an intact copy, or {_SET_ASIDE.format(p=path)}"
            )
    return ckpt


def integrity(ckpt: dict, path) -> str:
    """How a checkpoint read by :func:`load_checkpoint` was verified, in words."""
    if DIGEST in ckpt:
        return f"ok: content sha256 {str(ckpt[DIGEST])[:16]}… matches the digest stored in the file"
    if ckpt.get("format") == FORMAT and _legacy_sidecar(Path(path)).is_file():
        return f"ok: sha256 matches {_legacy_sidecar(Path(path)).name} (format version 1)"
    return "readable, but it carries no digest (written by other code): damage cannot be detected"


def load_checkpoint(path, map_location="cpu", model_config: dict | None = None) -> dict:
    """Read and validate a checkpoint (gptlab's or the book's format).

    With ``model_config`` given, a checkpoint made for another model shape is
    refused, naming the keys that differ.
    """
    path = Path(path)
    ckpt = _read(path, map_location)
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} holds no 'model_state_dict': it is neither a gptlab checkpoint nor the "
            "book's model_and_optimizer.pth format"
        )
    if ckpt.get("format") == FORMAT and ckpt.get("version") not in (1, VERSION):
        raise CheckpointError(
            f"{path} is checkpoint format version {ckpt.get('version')}; this gptlab reads 1 and {VERSION}"
        )
    if model_config is not None and "model_config" in ckpt:
        want, have = validate_config(model_config), ckpt["model_config"]
        diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"checkpoint {path} was made with another model config ({detail})")
    return ckpt


def load_into(ckpt: dict, model, optimizer=None) -> None:
    """Load model (and optimizer) state; shape mismatches become CheckpointError."""
    try:
        model.load_state_dict(ckpt["model_state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not fit this model: {exc}") from exc
    if optimizer is not None:
        if ckpt.get("optimizer_state_dict") is None:
            raise CheckpointError("checkpoint holds no optimizer state; it cannot resume training")
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])


def model_from_checkpoint(path, device="cpu", model_config: dict | None = None) -> GPTModel:
    """Build the model a checkpoint describes, with its weights, in eval mode.

    The book's format holds no config: pass ``model_config`` for it.
    """
    ckpt = load_checkpoint(path, map_location=device)
    cfg = ckpt.get("model_config") or model_config
    if cfg is None:
        raise CheckpointError(f"{path} records no model config (book format): pass model_config")
    model = GPTModel(cfg).to(device)
    load_into(ckpt, model)
    return model.eval()


def save_book_checkpoint(path, model, optimizer) -> Path:
    """The book's ``model_and_optimizer.pth`` layout (plus the digest), written atomically."""
    return _save(
        path, {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}
    )
