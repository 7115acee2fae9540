"""Pretraining runs as the pipeline uses them: seeded, checkpointed, resumable.

``pretrain`` sets everything up the way chapter 5 does (seed before the
loaders, seed again before the model, AdamW) and then drives
``training.train_model``. With a ``work_dir`` it writes an intermediate
checkpoint after every epoch and when interrupted (SIGTERM/SIGINT), and picks
up from the newest one on the next call, so a killed job loses at most the
work since the last step.

``fast=True`` trains the same model on the same data in fast mode
(``gptlab.fast``: fused kernels, fused AdamW, bf16 autocast where the
hardware has it, evaluation in inference mode): faster, equal up to
rounding, and resumable bit for bit like the exact mode. The two modes never
share intermediate checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from importlib import metadata
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_into, restore_rng_state, save_checkpoint
from .data import create_book_loaders
from .fast import fast_training, make_evaluator
from .io import sha256_file
from .model import GPTModel
from .tokenizer import TOKENIZER_ID, get_tokenizer
from .training import TrainState, stop_on_signals, train_model

# Part of every intermediate checkpoint's key: raise it with any change to gptlab that
# changes training results, so that no run continues from a checkpoint of older code.
RESULTS_VERSION = 1


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pretrain(
    text: str,
    *,
    model_config: dict,
    num_epochs: int,
    train_ratio: float = 0.90,
    batch_size: int = 2,
    max_length: int | None = None,
    stride: int | None = None,
    seed: int = 123,
    learning_rate: float = 0.0004,
    weight_decay: float = 0.1,
    eval_freq: int = 5,
    eval_iter: int = 5,
    start_context: str = "Every effort moves you",
    device="cpu",
    work_dir=None,
    resume_from=None,
    resume_mode: str = "exact",
    progress: bool = True,
    fast: bool = False,
):
    """Train the book's GPT on ``text``; return ``(model, optimizer, state, train_config)``.

    ``num_epochs`` is the total number of epochs the run should have completed.
    ``resume_from`` names a checkpoint to continue from:
    ``resume_mode="exact"`` restores everything (RNG, data order, step counters,
    history) so the result equals an uninterrupted run of ``num_epochs``;
    ``resume_mode="book"`` continues as the book's exercise 5.4 solution does:
    model and optimizer only, loaders rebuilt and re-seeded, counters from zero,
    ``num_epochs`` more epochs.
    ``work_dir`` holds intermediate checkpoints, one per set of settings
    (``latest-<digest>.pt``, keyed by :func:`settings_key`: the text's hash,
    the tokenizer, every model and training setting, the mode, the device
    type and the versions that change results); if one exists for exactly
    these settings, training continues from it, also towards a larger
    ``num_epochs``. One that holds more epochs than ``num_epochs`` is not used.
    ``fast`` selects fast mode (see the module docstring); it is recorded in
    ``train_config`` and an exact resume refuses a checkpoint of the other mode.
    """
    if resume_mode not in ("exact", "book"):
        raise ValueError(f"resume_mode={resume_mode!r} must be 'exact' or 'book'")
    if num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs} must be >= 1")
    for name, value in (("eval_freq", eval_freq), ("eval_iter", eval_iter), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    for name, value in (("learning_rate", learning_rate), ("weight_decay", weight_decay)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value} must be a finite number >= 0")
    if not 0 < train_ratio < 1:
        raise ValueError(f"train_ratio={train_ratio} must be strictly between 0 and 1")
    max_length = max_length or model_config["context_length"]
    stride = stride or max_length
    if max_length > model_config["context_length"]:
        raise ValueError(
            f"max_length={max_length} exceeds the model's context_length={model_config['context_length']}"
        )
    device = torch.device(device)
    tokenizer = get_tokenizer()
    train_config = dict(
        num_epochs=num_epochs,
        train_ratio=train_ratio,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        seed=seed,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        eval_freq=eval_freq,
        eval_iter=eval_iter,
        start_context=start_context,
        fast=bool(fast),
        corpus_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        tokenizer=TOKENIZER_ID,
    )

    train_loader, val_loader = create_book_loaders(
        text, train_ratio, batch_size, max_length, stride, seed=seed, tokenizer=tokenizer
    )
    torch.manual_seed(seed)
    model = GPTModel(model_config).to(device)
    loop_options = {}
    if fast:
        adamw = dict(lr=learning_rate, weight_decay=weight_decay)
        model, optimizer, autocast = fast_training(model, adamw, device=device)
        loop_options = dict(autocast=autocast, evaluate=make_evaluator(autocast))
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    state = TrainState()

    key = settings_key(text, model_config, train_config, resume_from, resume_mode, device)
    latest = intermediate_checkpoint(work_dir, key)
    ckpt = _usable_intermediate(latest, key, num_epochs, model_config, device)
    if ckpt is not None:
        _log(f"continuing from intermediate checkpoint {latest} (epoch {ckpt['train_state']['epoch']})")
        _restore_exact(ckpt, model, optimizer)
        state = TrainState.from_dict(ckpt["train_state"])
    elif resume_from is not None and resume_mode == "exact":
        state = _resume_exact(resume_from, model, optimizer, train_config, model_config, num_epochs, device)
    elif resume_from is not None:  # the book's way: re-seed and rebuild the loaders, count from zero
        ckpt = load_checkpoint(resume_from, map_location=device, model_config=model_config)
        load_into_keeping_implementation(ckpt, model, optimizer)
        train_loader, val_loader = create_book_loaders(
            text, train_ratio, batch_size, max_length, stride, seed=seed, tokenizer=tokenizer
        )

    def save(st: TrainState) -> None:
        if latest is not None:
            save_checkpoint(latest, model, optimizer, st.to_dict(), train_config, settings_key=key)

    with stop_on_signals() as should_stop:
        state = train_model(
            model,
            train_loader,
            val_loader,
            optimizer,
            device,
            num_epochs,
            eval_freq,
            eval_iter,
            start_context,
            tokenizer,
            state=state,
            on_epoch_end=save,
            should_stop=should_stop,
            on_stop=save,
            progress=progress,
            **loop_options,
        )
    return model, optimizer, state, train_config


def settings_key(text, model_config, train_config, resume_from, resume_mode, device) -> dict:
    """Everything that determines a run's result, apart from how many epochs it has done.

    Intermediate checkpoints are named by its digest and store it: one is
    continued only when every entry is the same (the text by its SHA-256, the
    checkpoint resumed from by its file's SHA-256).
    """
    return {
        "model": dict(model_config),
        "train": {k: v for k, v in train_config.items() if k != "num_epochs"},
        "resume_from": sha256_file(resume_from) if resume_from is not None else None,
        "resume_mode": resume_mode if resume_from is not None else None,
        "device": torch.device(device).type,
        "versions": {
            "results": RESULTS_VERSION,
            "torch": str(torch.__version__),
            "tiktoken": _tiktoken_version(),
        },
    }


def intermediate_checkpoint(work_dir, key: dict) -> Path | None:
    """Path of the intermediate checkpoint for the settings ``key`` (any ``num_epochs``)."""
    if work_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(work_dir) / f"latest-{digest}.pt"


def _usable_intermediate(latest: Path | None, key: dict, num_epochs: int, model_config, device):
    """The intermediate checkpoint to continue from, or None to start from the beginning."""
    if latest is None or not latest.exists():
        return None
    try:
        ckpt = load_checkpoint(latest, map_location=device, model_config=model_config)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\n(it is the intermediate checkpoint of this run)") from exc
    if ckpt.get("settings_key") != key:
        _log(f"{latest} was written for other settings; training from the start")
        return None
    done = ckpt["train_state"]["epoch"]
    if done > num_epochs or (done == num_epochs and ckpt["train_state"]["batch_in_epoch"]):
        _log(f"{latest} holds {done} epochs, more than the {num_epochs} asked for; training from the start")
        return None
    return ckpt


def _resume_exact(
    resume_from, model, optimizer, train_config, model_config, num_epochs, device
) -> TrainState:
    """Restore everything from ``resume_from``, refusing a run that this one would not continue."""
    ckpt = load_checkpoint(resume_from, map_location=device, model_config=model_config)
    if "rng_state" not in ckpt:
        raise CheckpointError(
            f"{resume_from} holds only model and optimizer (the book's format): "
            "use resume_mode='book' to continue from it"
        )
    made = ckpt.get("train_config", {})
    made_fast = bool(made.get("fast", False))
    if made_fast != bool(train_config["fast"]):
        raise CheckpointError(
            f"{resume_from} was trained in {_mode(made_fast)} mode; an exact resume in "
            f"{_mode(train_config['fast'])} mode would not continue that run. Resume with fast={made_fast}, "
            "or use resume_mode='book' to continue from its weights in either mode"
        )
    differ = {
        k: (made[k], v)
        for k, v in train_config.items()
        if k not in ("num_epochs", "fast") and k in made and made[k] != v
    }
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise CheckpointError(
            f"{resume_from} was trained with other settings ({detail}); an exact resume would not "
            "continue that run. Use the same settings, or resume_mode='book' to continue from its weights"
        )
    _restore_exact(ckpt, model, optimizer)
    state = TrainState.from_dict(ckpt["train_state"])
    if state.epoch >= num_epochs:
        raise ValueError(
            f"{resume_from} has already completed {state.epoch} epochs; "
            f"num_epochs={num_epochs} must be larger to train further"
        )
    return state


def _tiktoken_version() -> str | None:
    try:
        return metadata.version("tiktoken")
    except metadata.PackageNotFoundError:  # pragma: no cover - tiktoken is a dependency
        return None


def _mode(fast) -> str:
    return "fast" if fast else "exact"


def load_into_keeping_implementation(ckpt: dict, model, optimizer) -> None:
    """``load_into``, keeping the optimizer's kernel choice (fused/foreach/loop).

    ``Optimizer.load_state_dict`` copies every hyperparameter of the saved
    groups, the implementation flags included, so a book-style continuation
    of a fast run would otherwise train with the fused kernel in exact mode
    (and vice versa). The flags change how, never what, AdamW computes.
    """
    flags = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    load_into(ckpt, model, optimizer)
    for group, kept in zip(optimizer.param_groups, flags, strict=True):
        group.update(kept)


def _restore_exact(ckpt: dict, model, optimizer) -> None:
    load_into_keeping_implementation(ckpt, model, optimizer)
    restore_rng_state(ckpt["rng_state"])
