"""Checkpoints that resume training exactly (exercise 5.4, done thoroughly).

A gptlab checkpoint holds model and optimizer state, every RNG state (torch
CPU/CUDA, Python, NumPy), the training position (epoch, batch within the
epoch, the epoch's shuffle seed, global step, tokens seen), the loss history
and the model/training configuration. It is written atomically (temporary
file, fsync, ``os.replace``) with a SHA-256 sidecar, and read with
``torch.load(weights_only=True)``: no arbitrary pickles are ever executed.

The book's own ``model_and_optimizer.pth`` (``model_state_dict`` and
``optimizer_state_dict``) loads too.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from .model import GPTModel, validate_config

_UMASK = os.umask(0)
os.umask(_UMASK)

FORMAT = "gptlab-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_write(path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then move the finished file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        write_fn(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def save_checkpoint(path, model, optimizer, train_state: dict, train_config: dict | None = None):
    """Write a resumable checkpoint of the training run to ``path``."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dict(model.cfg),
        "train_config": dict(train_config or {}),
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "rng_state": capture_rng_state(),
        "train_state": train_state,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    digest = _sha256(path)
    atomic_write(_sidecar(path), lambda tmp: tmp.write_text(f"{digest}  {path.name}\n"))
    return path


def _read(path: Path, map_location) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    sidecar = _sidecar(path)
    if sidecar.is_file():
        expected = sidecar.read_text().split()[0]
        actual = _sha256(path)
        if actual != expected:
            raise CheckpointError(
                f"checkpoint {path} is corrupt or truncated (sha256 {actual[:12]}…, recorded "
                f"{expected[:12]}… in {sidecar.name}); delete it and re-run the training step"
            )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged archives
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is truncated, "
            "corrupt, or not a PyTorch checkpoint — delete it and re-run the training step"
        ) from exc


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
    if ckpt.get("format") == FORMAT and ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is checkpoint format version {ckpt.get('version')}; this gptlab reads {VERSION}"
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


def save_book_checkpoint(path, model, optimizer) -> None:
    """The book's ``model_and_optimizer.pth`` layout, written atomically."""
    payload = {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
